"""One check of an artifact, its explicit verdict and its typed figures."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ca_export.report.figures import CONVERTER, Figures, figures_from_dict, figures_to_dict


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
    figures: Figures | None = None
    accepted: bool = False

    def __post_init__(self) -> None:
        if self.accepted and self.verdict in (Verdict.PASSED, Verdict.FAILED):
            raise ValueError(f"check {self.name}: only a check not run or not verified is accepted")
        if self.verdict in (Verdict.NOT_RUN, Verdict.NOT_VERIFIED) and not self.reason:
            raise ValueError(f"check {self.name}: {self.verdict.value} needs a reason")

    @classmethod
    def judged(
        cls, name: str, passed: bool, figures: Figures | None = None, reason: str = ""
    ) -> Check:
        """PASSED or FAILED, with its figures."""
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
        """The JSON form: name, verdict, ran, passed (``ok``), accepted and reason, then the
        figures (``kind`` and their fields)."""
        data: dict[str, Any] = {
            "name": self.name,
            "verdict": self.verdict.value,
            "ran": self.ran,
            "passed": self.ok,
        }
        if self.verdict in (Verdict.NOT_RUN, Verdict.NOT_VERIFIED):
            data["accepted"] = self.accepted
        if self.reason:
            data["reason"] = self.reason
        return data | ({} if self.figures is None else figures_to_dict(self.figures))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        """The check of a JSON form written by ``to_dict``."""
        figures = figures_from_dict(data) if "kind" in data else None
        verdict = Verdict(data["verdict"])
        reason, accepted = data.get("reason", ""), data.get("accepted", False)
        return cls(data["name"], verdict, reason, figures, accepted)


CONVERTER.register_unstructure_hook(Check, Check.to_dict)
CONVERTER.register_structure_hook(Check, lambda data, _: Check.from_dict(data))
