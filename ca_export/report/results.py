"""Result objects of each run and their JSON form (``docs/report-schema.md``).

Every report writes ``schema`` and ``kind`` (``export``, ``optimize``, ``verify``,
``bench``); ``load`` reads any of them back into its typed object (cattrs structures the
nested dataclasses; checks read their figures by ``kind``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ca_export.patterns import CABlock, Rejection
from ca_export.patterns.view import OpT, ValueT
from ca_export.report.checks import Check
from ca_export.report.figures import CONVERTER, GateFigures
from ca_export.rewrites.passes import PassResult
from ca_export.verify.localize import Localization
from ca_export.verify.lossy import LossyGate
from ca_export.verify.metrics import Comparison
from ca_export.verify.parity import GateResult
from ca_export.verify.tolerances import Tolerance

SCHEMA = "ca-export.report/4"
"""The version of the JSON form of every report (``docs/report-schema.md``)."""


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
    def of(cls, block: CABlock[OpT, ValueT]) -> BlockReport:
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
    passes: list[PassResult] = field(default_factory=list)

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
    opset: int | None = None
    """The ONNX opset, or the Core ML specification version; None for a format without one."""
    ca_blocks: list[BlockReport] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    target: str | None = None
    """The runtime the CA blocks were rewritten for (``ca_export.rewrites.TARGETS``)."""
    passes: list[PassResult] = field(default_factory=list)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    structure: Check | None = None
    parity: Check | None = None
    artifact: dict[str, Any] | None = None
    stages: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "export"

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
        return _head(self) | _plain(self) | {"passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        """The report of a JSON form written by ``to_dict``."""
        return CONVERTER.structure(_checked(data, cls.kind), cls)


def _head(report: Any) -> dict[str, Any]:
    """The JSON form's first keys: the schema and the kind of report."""
    return {"schema": SCHEMA, "kind": report.kind}


def _plain(report: Any) -> dict[str, Any]:
    """A report's fields as JSON-ready data."""
    fields = [f.name for f in dataclasses.fields(report)]
    return {name: CONVERTER.unstructure(getattr(report, name)) for name in fields}


def _checked(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """``data`` if it is a report of this schema and ``kind``; a ValueError otherwise."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report: schema {data.get('schema')!r}")
    if data.get("kind") != kind:
        raise ValueError(f"not a {kind} report: kind {data.get('kind')!r}")
    return data


def _all_ok(checks: list[Check | None]) -> bool:
    """Whether every check is present and counts as passed."""
    return all(check is not None and check.ok for check in checks)


def gate_check(name: str, gate: GateResult, inputs: int) -> Check:
    """A gate's verdict as a check, with its figures (``GateFigures``)."""
    return Check.judged(name, gate.passed, GateFigures.of(gate, inputs))


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
    passes: list[PassResult] = field(default_factory=list)
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
    kind: ClassVar[str] = "optimize"

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
        return _head(self) | _plain(self) | {"passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizeReport:
        """The report of a JSON form written by ``to_dict``."""
        return CONVERTER.structure(_checked(data, cls.kind), cls)


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
    kind: ClassVar[str] = "verify"

    @property
    def passed(self) -> bool:
        """Whether every artifact passed."""
        return bool(self.artifacts) and all(a.passed for a in self.artifacts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyReport:
        """The report of a JSON form written by ``to_dict``."""
        return CONVERTER.structure(_checked(data, cls.kind), cls)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, each artifact's and lossy gate's verdict as ``passed``."""
        data = _head(self) | _plain(self)
        data["passed"] = self.passed
        for entry, result in zip(data["artifacts"], self.artifacts, strict=True):
            entry["passed"] = result.passed
            if result.lossy is not None:
                gate = result.lossy
                entry["lossy"] |= {"passed": gate.passed, "failures": gate.failures()}
        return data


def default_threads() -> tuple[int, ...]:
    """One thread, and every core of the machine."""
    return tuple(sorted({1, os.cpu_count() or 1}))


@dataclass
class BenchConfig:
    """How to time: warm-up runs, then at least ``runs`` rounds and ``min_time`` seconds."""

    warmup: int = 10
    runs: int = 50
    min_time: float = 0.0
    threads: tuple[int, ...] = field(default_factory=default_threads)
    profile_runs: int = 20
    seed: int = 0
    layouts: tuple[str, ...] = ("blocked", "plain")
    """ONNX Runtime session layouts by name (``ca_export.bench.LAYOUTS``)."""


@dataclass
class Timing:
    """One model at one thread count: latency percentiles in ms and throughput."""

    name: str
    threads: int
    layout: str
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    throughput: float
    """Samples per second (batch size / mean latency)."""
    samples_ms: tuple[float, ...] = ()
    """Every timed run, in ms."""

    @classmethod
    def of(cls, name: str, threads: int, layout: str, seconds: list[float], batch: int) -> Timing:
        """Summarise per-run wall times (seconds); the runs are kept, in ms."""
        ms = np.asarray(seconds) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        mean, low = float(ms.mean()), float(ms.min())
        runs = tuple(float(v) for v in ms)
        return cls(
            name, threads, layout, len(ms), mean, p50, p90, p99, low, batch * 1e3 / mean, runs
        )


@dataclass
class BenchReport:
    """Timings of every model at every thread count, and each model's op breakdown."""

    input_shape: list[int]
    models: dict[str, str]
    config: BenchConfig
    timings: list[Timing] = field(default_factory=list)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model: ms per run by ONNX Runtime op type (after ORT's graph optimisations, in
    the first layout)."""
    forms: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per exported model: the form each CA block got (the passes applied to it)."""
    kind: ClassVar[str] = "bench"

    def timing(self, name: str, threads: int, layout: str | None = None) -> Timing:
        """The timing of one model at one thread count in one layout (default: the first)."""
        layout = layout or self.config.layouts[0]
        return next(
            t
            for t in self.timings
            if t.name == name and t.threads == threads and t.layout == layout
        )

    def ratio(
        self,
        name: str,
        reference: str,
        threads: int,
        stat: str = "p50_ms",
        layout: str | None = None,
    ) -> float:
        """``name``'s latency over ``reference``'s, from the same run, thread count, layout."""
        ref = getattr(self.timing(reference, threads, layout), stat)
        return float(getattr(self.timing(name, threads, layout), stat) / ref)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return _head(self) | _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        """The report of a JSON form written by ``to_dict``."""
        return CONVERTER.structure(_checked(data, cls.kind), cls)


REPORTS: dict[str, Any] = {
    cls.kind: cls for cls in (ExportReport, OptimizeReport, VerifyReport, BenchReport)
}
"""Each kind of report by its ``kind``."""


def load(data: dict[str, Any]) -> ExportReport | OptimizeReport | VerifyReport | BenchReport:
    """The typed report of any report's JSON form; a ValueError for anything else."""
    kind = data.get("kind")
    if kind not in REPORTS:
        raise ValueError(f"not a ca-export report: kind {kind!r}, schema {data.get('schema')!r}")
    report: ExportReport | OptimizeReport | VerifyReport | BenchReport
    report = REPORTS[kind].from_dict(data)
    return report
