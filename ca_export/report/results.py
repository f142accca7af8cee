"""Result objects of each run and their JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ca_export.patterns import CABlock, Rejection
from ca_export.report.checks import Check
from ca_export.verify.localize import Localization
from ca_export.verify.lossy import LossyGate
from ca_export.verify.metrics import Comparison
from ca_export.verify.parity import GateResult
from ca_export.verify.tolerances import Tolerance

SCHEMA = "ca-export.report/3"
"""The version of the JSON form of export, optimize and verify reports."""


@dataclass
class BlockReport:
    """One CA block as the user sees it; ``id`` is the key of the pass results."""

    id: str
    module: str
    channels: int
    mip: int
    variant: dict[str, str]
    findings: list[str]
    rewritten: bool = False
    ca_only_nodes_before: dict[str, int] = field(default_factory=dict)
    ca_only_nodes_after: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, block: CABlock) -> BlockReport:
        """The report entry of a matched block."""
        return cls(
            block.id, block.module, block.channels, block.mip, dict(block.variant), block.findings
        )


@dataclass
class InspectReport:
    """What ``inspect`` found in a model."""

    source: str
    input_shape: list[int]
    ca_blocks: list[BlockReport]
    rejected: list[Rejection]
    notices: list[str] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class ExportReport:
    """Everything one export run did, measured and decided.

    ``parity`` and ``structure`` are the run's two gates; ``checks`` holds every other
    check by name, and ``expected`` names the checks this run must hold. A gate or an
    expected check that is missing fails the report.
    """

    source: str
    tool_version: str
    format: str
    input_shape: list[int]
    dynamic: bool
    rewrite: bool
    opset: int
    ca_blocks: list[BlockReport] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    target: str | None = None
    """The runtime the CA blocks were rewritten for (``ca_export.rewrites.TARGETS``)."""
    passes: list[dict[str, Any]] = field(default_factory=list)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    structure: Check | None = None
    parity: Check | None = None
    artifact: dict[str, Any] | None = None
    stages: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)

    def add(self, check: Check) -> None:
        """Record ``check`` under its name (replacing an earlier one of that name)."""
        self.checks[check.name] = check

    @property
    def passed(self) -> bool:
        """Whether both gates and every expected check are present, and every check counts
        as passed (``Check.ok``)."""
        expected = [self.checks.get(name) for name in self.expected]
        return _all_ok([self.parity, self.structure, *expected, *self.checks.values()])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``SCHEMA``), with the verdict as ``passed``."""
        return {"schema": SCHEMA} | dataclasses.asdict(self) | _check_forms(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        """The report of a JSON form written by ``to_dict``."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report: schema {data.get('schema')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["ca_blocks"] = [BlockReport(**b) for b in data["ca_blocks"]]
        values["rejected"] = [Rejection(**r) for r in data["rejected"]]
        for gate in ("structure", "parity"):
            values[gate] = None if data[gate] is None else Check.from_dict(gate, data[gate])
        values["checks"] = {n: Check.from_dict(n, c) for n, c in data["checks"].items()}
        return cls(**values)


def _all_ok(checks: list[Check | None]) -> bool:
    """Whether every check is present and counts as passed."""
    return all(check is not None and check.ok for check in checks)


def _check_forms(report: ExportReport | OptimizeReport) -> dict[str, Any]:
    """The JSON forms of a report's gates and checks, and its verdict."""
    gates = {name: getattr(report, name) for name in ("structure", "parity")}
    return {name: None if gate is None else gate.to_dict() for name, gate in gates.items()} | {
        "checks": {name: check.to_dict() for name, check in report.checks.items()},
        "passed": report.passed,
    }


def gate_summary(gate: GateResult) -> dict[str, Any]:
    """A gate's verdict, worst figures and per-case comparisons as plain data."""
    return {
        "backend": gate.backend,
        "passed": gate.passed,
        "max_abs_err": gate.worst("max_abs_err"),
        "max_rel_err": gate.worst("rel_err"),
        "max_margin": gate.worst("margin"),
        "min_cosine": gate.min_cosine,
        "bounds": None if gate.tolerance is None else dataclasses.asdict(gate.tolerance),
        "failures": gate.failures(),
        "cases": [dataclasses.asdict(case) for case in gate.cases],
    }


def gate_check(name: str, gate: GateResult, **details: Any) -> Check:
    """A gate's verdict as a check, its summary (``gate_summary``) and ``details`` as figures."""
    return Check.judged(name, gate.passed, gate_summary(gate) | details)


def to_json(data: dict[str, Any]) -> str:
    """A report as indented JSON text."""
    return json.dumps(data, indent=2, default=str) + "\n"


@dataclass
class OptimizeReport:
    """Everything one ``optimize`` run found, rewrote, skipped, measured and wrote."""

    source: str
    tool_version: str
    opset: int
    input_shapes: dict[str, list[int]]
    ca_blocks: list[BlockReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    target: str | None = None
    """The runtime the CA blocks were rewritten for (``ca_export.rewrites.TARGETS``)."""
    passes: list[dict[str, Any]] = field(default_factory=list)
    normalize: dict[str, Any] = field(default_factory=dict)
    dynamic: dict[str, Any] = field(default_factory=dict)
    op_counts_before: dict[str, int] = field(default_factory=dict)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    structure: Check | None = None
    parity: Check | None = None
    artifact: dict[str, Any] | None = None
    stages: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)

    def add(self, check: Check) -> None:
        """Record ``check`` under its name (replacing an earlier one of that name)."""
        self.checks[check.name] = check

    @property
    def passed(self) -> bool:
        """Whether both gates are present, every check counts as passed (``Check.ok``) and
        dynamic H/W, where applied, ran at another size."""
        dynamic = not self.dynamic.get("applied") or self.dynamic.get("passed") is True
        return dynamic and _all_ok([self.parity, self.structure, *self.checks.values()])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``SCHEMA``), with the verdict as ``passed``."""
        return {"schema": SCHEMA} | dataclasses.asdict(self) | _check_forms(self)


@dataclass
class VerifyCase:
    """One input through one artifact: its comparisons, or why it was skipped."""

    input: str
    input_shape: tuple[int, ...]
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class ArtifactResult:
    """Every case of one artifact, the tolerance used, and where outputs diverge.

    A lossy file (fp16, int8) is judged by the lossy gate over all its cases at once:
    ``lossy`` holds that verdict and its cases hold no comparisons.
    """

    path: str
    dtype: str
    tolerance: Tolerance
    backend: str = "onnxruntime-cpu"
    cases: list[VerifyCase] = field(default_factory=list)
    localization: Localization | None = None
    lossy: LossyGate | None = None
    allow_unverified: bool = False
    accuracy: Check | None = None
    """The accuracy gate on ``--eval-data`` (``verify.accuracy``), where it ran."""

    @property
    def passed(self) -> bool:
        """Whether every comparison, the lossy gate and the accuracy gate (if any) passed, and
        a case ran (or, with ``allow_unverified``, every case was skipped as not verified)."""
        ran = [c for c in self.cases if c.skipped is None]
        lossy = self.lossy is None or self.lossy.passed
        if self.accuracy is not None and not self.accuracy.ok:
            return False
        if not ran and self.lossy is None:
            return self.allow_unverified and all(
                (c.skipped or "").startswith("not verified") for c in self.cases
            )
        return lossy and all(x.passed for c in ran for x in c.comparisons)


@dataclass
class VerifyReport:
    """The verdict over all artifacts."""

    source: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    ca_blocks: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every artifact passed."""
        return bool(self.artifacts) and all(a.passed for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = {"schema": SCHEMA} | dataclasses.asdict(self)
        data["passed"] = self.passed
        for entry, result in zip(data["artifacts"], self.artifacts, strict=True):
            entry["passed"] = result.passed
            if result.accuracy is not None:
                entry["accuracy"] = result.accuracy.to_dict()
            if result.lossy is not None:
                gate = result.lossy
                entry["lossy"] |= {"passed": gate.passed, "failures": gate.failures()}
        return data
