"""The figures a check carries: one small frozen dataclass per kind of check.

Renderers read these fields, never string keys. Each kind writes itself into the check's
JSON form (``to_dict``, with its ``kind``) and ``figures_from_dict`` reads it back. The
(de)serialisation of nested dataclasses, tuples and optionals is cattrs' (``CONVERTER``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import cattrs

from ca_export.export.executorch import OutsideOp
from ca_export.verify.lossy import LossyGate, OutputAgreement
from ca_export.verify.metrics import Comparison
from ca_export.verify.parity import CaseResult, GateResult
from ca_export.verify.tolerances import Tolerance

if TYPE_CHECKING:
    from ca_export.verify.mil.fp32_arithmetic import Fp32Arithmetic

CONVERTER = cattrs.Converter()
"""Turns the report's dataclasses into JSON-ready data and back."""
CONVERTER.register_structure_hook(bool | str, lambda value, _: value)


@dataclass(frozen=True)
class GateFigures:
    """A parity gate: its worst figures over every case, its bounds, failures and cases.

    ``max_margin`` is the worst error over its bound (1 = at the bound). ``blocks`` is the
    per-block gate of a rewritten program: each comparison there is one CA block.
    ``runtime_blocks`` is the per-block gate inside the runtime (ncnn): each CA block of
    the artifact fed PyTorch's input to it, one comparison per block.
    """

    kind: ClassVar[str] = "gate"
    backend: str
    inputs: int
    max_abs_err: float
    max_rel_err: float
    max_margin: float
    min_cosine: float
    bounds: Tolerance | None
    failures: tuple[str, ...] = ()
    cases: tuple[CaseResult, ...] = ()
    blocks: GateFigures | None = None
    runtime_blocks: GateFigures | None = None

    @classmethod
    def of(
        cls: type[G], gate: GateResult, inputs: int, blocks: GateFigures | None = None, **more: Any
    ) -> G:
        """The figures of a gate run on ``inputs`` inputs (``more``: a subclass's fields)."""
        return cls(
            gate.backend,
            inputs,
            gate.worst("max_abs_err"),
            gate.worst("rel_err"),
            gate.worst("margin"),
            gate.min_cosine,
            gate.tolerance,
            tuple(gate.failures()),
            tuple(gate.cases),
            blocks,
            **more,
        )

    def comparisons(self) -> list[tuple[CaseResult, Comparison]]:
        """Every comparison with its case."""
        return [(case, c) for case in self.cases for c in case.comparisons]

    def by_size(self) -> dict[tuple[int, ...], bool]:
        """Each input shape the gate ran at, in order, and whether every comparison there
        passed."""
        sizes: dict[tuple[int, ...], bool] = {}
        for case in self.cases:
            ok = all(c.passed for c in case.comparisons)
            sizes[tuple(case.input_shape)] = sizes.get(tuple(case.input_shape), True) and ok
        return sizes

    def worst(self) -> Comparison | None:
        """The comparison with the largest margin (None without any)."""
        pairs = self.comparisons()
        return max((c for _, c in pairs), key=lambda c: c.margin) if pairs else None


G = TypeVar("G", bound=GateFigures)


@dataclass(frozen=True)
class WeightsFigures(GateFigures):
    """A compressed package's weights in PyTorch against the fp32 model, and their placing."""

    kind: ClassVar[str] = "weights"
    format: str = ""
    tolerance: str = ""
    min_top1: float | None = None
    weights_placed: int = 0
    factors_fitted: int = 0
    weights_unmatched: int = 0


@dataclass(frozen=True)
class OrtFormatFigures(GateFigures):
    """The ``.ort`` file's gate and the operators its config names."""

    kind: ClassVar[str] = "ort_format"
    operators: tuple[str, ...] = ()


@dataclass(frozen=True)
class SizeSpan:
    """The sizes a dynamic axis takes: smallest, largest and the step between."""

    min: int
    max: int
    multiple_of: int


@dataclass(frozen=True)
class StructureFigures:
    """CA-only ops left after the rewrite, where they are and, for ExecuTorch and LiteRT,
    what ran outside the XNNPACK delegate.

    ``segments``: XNNPACK delegate segments (LiteRT: partitions). ``outside``: the ops no
    segment runs; ``transposes``: LiteRT's TRANSPOSE ops (``node`` is the op's index in
    the .tflite, ``op 12``).
    """

    kind: ClassVar[str] = "structure"
    ca_only_nodes_after: int
    ops: str = "Transpose/Concat/Split/Slice/Shape/Gather"
    in_rewritten_blocks: int = 0
    in_blocks_not_rewritten: int = 0
    in_unmatched_concats: dict[str, dict[str, int]] = field(default_factory=dict)
    segments: int | None = None
    outside: tuple[OutsideOp, ...] = ()
    transposes: tuple[OutsideOp, ...] = ()
    dynamic_sizes: dict[str, SizeSpan] = field(default_factory=dict)


@dataclass(frozen=True)
class NcnnFigures:
    """An ncnn model's layers, the layers in which pnnx baked the traced size
    (``export.ncnn.baked_sizes``) and, for a ``--fixed-size`` model, the one H x W it is
    valid at (None: every size, or every multiple of ``multiple``)."""

    kind: ClassVar[str] = "ncnn"
    layers: int
    baked_sizes: tuple[str, ...] = ()
    valid_size: tuple[int, int] | None = None
    multiple: tuple[int, int] = (1, 1)

    def valid(self) -> str:
        """The sizes the model is valid at, in words."""
        if self.valid_size is not None:
            return "{}x{} only (--fixed-size)".format(*self.valid_size)
        if self.multiple != (1, 1):
            return "every H a multiple of {} and W of {}".format(*self.multiple)
        return "every size"


@dataclass(frozen=True)
class Calibration:
    """Where int8 calibration samples came from, and how many."""

    source: str
    samples: int


@dataclass(frozen=True)
class KeptFp32:
    """The modules kept in fp32 in an int8 model, and their nodes."""

    modules: tuple[str, ...]
    nodes: int


@dataclass(frozen=True)
class Sensitivity:
    """``--keep-fp32 auto``: the figure of the model with only ``module`` in int8."""

    module: str
    value: float
    passed: bool
    text: str


@dataclass(frozen=True)
class SearchStep:
    """``--keep-fp32 auto``: one try, the modules kept fp32 and what the judge said."""

    kept: tuple[str, ...]
    score: str


@dataclass(frozen=True)
class KeepAuto:
    """What ``--keep-fp32 auto`` measured (``pipeline.keep_auto``): every node int8, each
    candidate's sensitivity (least figure first), each step, and the modules kept."""

    all_int8: str
    sensitivity: tuple[Sensitivity, ...] = ()
    steps: tuple[SearchStep, ...] = ()
    kept: tuple[str, ...] = ()
    passed: bool = False


@dataclass(frozen=True)
class LossyFigures:
    """The lossy gate of an fp16 or int8 file: agreement with its fp32 reference per output."""

    kind: ClassVar[str] = "lossy"
    precision: str
    method: str = ""
    reference: str = ""
    backend: str = ""
    bounds: dict[str, float | None] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[OutputAgreement, ...] = ()
    failures: tuple[str, ...] = ()
    calibration: Calibration | None = None
    kept_fp32: KeptFp32 | None = None
    keep_fp32_auto: KeepAuto | None = None
    fp32_bytes: int | None = None
    bytes: int | None = None

    @classmethod
    def of(cls, gate: LossyGate, reference: str, **figures: Any) -> LossyFigures:
        """The figures of a lossy gate against ``reference``, and the run's other figures."""
        return cls(
            gate.precision,
            reference=reference,
            backend=gate.backend,
            bounds=dict(gate.bounds),
            inputs=tuple(gate.inputs),
            outputs=tuple(gate.outputs),
            failures=tuple(gate.failures()),
            **figures,
        )


@dataclass(frozen=True)
class AccuracyFigures:
    """The accuracy gate on a labelled set (``verify.accuracy``): top-1 and top-5 (shares)
    of the fp32 ``reference`` and of the ``artifact``, the top-1 ``drop`` in points and its
    bound ``max_drop``."""

    kind: ClassVar[str] = "accuracy"
    data: str
    output: str
    samples: int
    classes: int
    reference: str
    artifact: str
    reference_top1: float
    reference_top5: float
    top1: float
    top5: float
    drop: float
    max_drop: float
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArithmeticFigures:
    """An fp16 program evaluated in fp32 arithmetic against its fp32 twin (or why not)."""

    ran: bool
    passed: bool = False
    reason: str = ""
    rel_err: float = 0.0
    margin: float = 0.0
    min_cosine: float = 1.0
    fp16_constants: int = 0
    constant_mismatches: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: Fp32Arithmetic) -> ArithmeticFigures:
        """The figures of a run of the check (the first ten constant mismatches)."""
        gate = result.gate
        return cls(
            True,
            result.passed,
            rel_err=gate.worst("rel_err"),
            margin=gate.worst("margin"),
            min_cosine=gate.min_cosine,
            fp16_constants=result.constants,
            constant_mismatches=tuple(result.mismatches[:10]),
            failures=tuple(gate.failures()),
        )


@dataclass(frozen=True)
class MilFigures:
    """The Core ML program evaluated in NumPy: what was verified, and the fp32-arithmetic
    check of an fp16 program."""

    kind: ClassVar[str] = "mil"
    verified: bool | str = True
    fp32_arithmetic: ArithmeticFigures | None = None


@dataclass(frozen=True)
class OpsetFigures:
    """The opset asked for, the one written, the exporter's, and the nodes converted down."""

    kind: ClassVar[str] = "opset"
    asked: int
    written: int
    exported_at: int
    converted: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ValueFigures:
    """Plain named values of a check no renderer draws (opset, io, load, ...), shown as a
    table."""

    kind: ClassVar[str] = "values"
    values: dict[str, Any] = field(default_factory=dict)


Figures = (
    GateFigures
    | WeightsFigures
    | OrtFormatFigures
    | StructureFigures
    | NcnnFigures
    | LossyFigures
    | AccuracyFigures
    | MilFigures
    | OpsetFigures
    | ValueFigures
)
"""Any kind of check figures."""

KINDS: dict[str, type[Any]] = {
    kind.kind: kind
    for kind in (
        GateFigures,
        WeightsFigures,
        OrtFormatFigures,
        StructureFigures,
        NcnnFigures,
        LossyFigures,
        AccuracyFigures,
        MilFigures,
        OpsetFigures,
        ValueFigures,
    )
}
"""Each kind of figures by its ``kind`` name."""


def figures_to_dict(figures: Figures) -> dict[str, Any]:
    """The JSON form: ``kind``, then the figures' fields."""
    fields: dict[str, Any] = CONVERTER.unstructure(figures)
    return {"kind": figures.kind} | fields


def figures_from_dict(data: dict[str, Any]) -> Figures:
    """The figures of a JSON form written by ``figures_to_dict`` (other keys ignored)."""
    cls = KINDS[data["kind"]]
    names = {f.name for f in dataclasses.fields(cls)}
    figures: Figures = CONVERTER.structure({k: v for k, v in data.items() if k in names}, cls)
    return figures


CONVERTER.register_structure_hook(Figures, lambda data, _: figures_from_dict(data))
