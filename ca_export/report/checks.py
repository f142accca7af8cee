"""One check of an artifact and its explicit verdict."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

RESERVED = frozenset({"verdict", "ran", "passed", "accepted", "reason"})
"""Keys of a check's JSON form that its ``details`` may not use."""


class Verdict(enum.Enum):
    """What became of a check."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"
    NOT_VERIFIED = "not verified"


@dataclass(frozen=True)
class Check:
    """A named check, its verdict, why (for anything but a plain pass or fail) and its figures.

    ``accepted`` marks a NOT_RUN or NOT_VERIFIED check that the run declares acceptable
    (a prediction that cannot run off macOS, ``--allow-unverified``); only then does
    such a check count as passed.
    """

    name: str
    verdict: Verdict
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    accepted: bool = False

    def __post_init__(self) -> None:
        if self.accepted and self.verdict in (Verdict.PASSED, Verdict.FAILED):
            raise ValueError(f"check {self.name}: only a check not run or not verified is accepted")
        if self.verdict in (Verdict.NOT_RUN, Verdict.NOT_VERIFIED) and not self.reason:
            raise ValueError(f"check {self.name}: {self.verdict.value} needs a reason")
        clash = RESERVED & self.details.keys()
        if clash:
            raise ValueError(f"check {self.name}: details may not hold {sorted(clash)}")

    @classmethod
    def judged(cls, name: str, passed: bool, details: dict[str, Any], reason: str = "") -> Check:
        """PASSED or FAILED; a ``passed`` key in ``details`` is dropped (the verdict holds it)."""
        figures = {k: v for k, v in details.items() if k != "passed"}
        return cls(name, Verdict.PASSED if passed else Verdict.FAILED, reason, figures)

    @property
    def ran(self) -> bool:
        """Whether the check ran (a NOT_VERIFIED check ran and could not judge)."""
        return self.verdict is not Verdict.NOT_RUN

    @property
    def ok(self) -> bool:
        """Whether the check counts as passed: an explicit pass, or accepted."""
        return self.verdict is Verdict.PASSED or self.accepted

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: verdict, ran, passed (``ok``), accepted and reason, then details."""
        data: dict[str, Any] = {"verdict": self.verdict.value, "ran": self.ran, "passed": self.ok}
        if self.verdict in (Verdict.NOT_RUN, Verdict.NOT_VERIFIED):
            data["accepted"] = self.accepted
        if self.reason:
            data["reason"] = self.reason
        return data | self.details

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> Check:
        """The check of a JSON form written by ``to_dict``."""
        details = {k: v for k, v in data.items() if k not in RESERVED}
        verdict = Verdict(data["verdict"])
        return cls(name, verdict, data.get("reason", ""), details, data.get("accepted", False))
