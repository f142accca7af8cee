"""The ncnn pipeline: prepare (ncnn form) -> convert with pnnx -> gate in ncnn -> write.

ncnn has no static shapes: a param file runs at whatever size it is fed. The default is
size-safe: the program is traced with dynamic H and W and rewritten into the ``ncnn``
form, whose strip pools are ``mean``s (ncnn ``Reduction`` layers, right at every size),
and the gate runs in ncnn at the traced size and at two other sizes (one non-square
where the model allows). ``fixed_size`` traces one static size instead: strip pools
become average pools spanning the traced axis (faster in ncnn, see
``benchmarks/ncnn_forms.py``) and the model is right at that size only; the report and
the companion metadata file (``OUT.ncnn.json``) say so, and ``verify`` refuses other
sizes.

TorchScript and pnnx fix every size the program computes from the input's H and W. In the
size-safe form an upsample to another map's size becomes an upsample by its whole ratio
(``rewrites.size_to_scale``), exact where H and W are multiples of a number the metadata
records (``hw_multiple``; the input size must be one, and ``verify`` refuses others). A
detection head's grid, stride fill and flattening views are read from the feature maps,
its per-anchor view of the channels becomes a channel split and its expands to a map's
size are dropped where their readers broadcast anyway (``HEAD_PASSES``: ``rewrites.grid_from_map``,
``fill_from_map``, ``split_view``, ``broadcast_expand``, ``reshape_minus_one``), and pnnx
is given a second input shape, with which it writes a ``-1`` reshape as a size
expression. Any other op that takes such a size (``export.ncnn.pinned_ops``: an
``expand`` read by another op, a reshape holding both H and W that splits no channels)
cannot stay size-safe through pnnx: the command exits 2 before converting, naming the
ops and suggesting ``--fixed-size``.

The program goes through TorchScript to pnnx (``export.ncnn.convert``) with fp32 weights,
and ncnn runs it with fp16 storage off (``verify.ncnn_runtime``): the exact gate in fp32.
Each rewritten block is gated in PyTorch as well, and each CA block inside ncnn,
fed PyTorch's input to it (``NcnnRunner.block_gate``). With ``precision="fp16"`` the gated fp32
model is converted again with pnnx's fp16 weights and run with ncnn's fp16 storage and
arithmetic on, as phones run it, and judged by the lossy gate (``verify.lossy``, the
``("fp16", "ncnn")`` row) on 8 seeded inputs at the traced size; those files are
written. The structure check fails a size-safe model in which pnnx baked a traced size
into a layer (``export.ncnn.baked_sizes``). The three files take their names only when
every check passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import ncnn
from ca_export.export.ncnn import BACKEND, metadata_path
from ca_export.files import Output, guard, publish, scratch, staging, write_text
from ca_export.pipeline.common import (
    ModelJob,
    Prepared,
    Progress,
    Stages,
    quiet,
    with_block_gate,
)
from ca_export.report import Check, ExportReport
from ca_export.report.figures import LossyFigures, NcnnFigures, ValueFigures
from ca_export.rewrites import scale_upsamples
from ca_export.rewrites.broadcast_expand import broadcast_expand
from ca_export.rewrites.fill_from_map import fill_from_map
from ca_export.rewrites.grid_from_map import grid_from_map
from ca_export.rewrites.reshape_minus_one import reshape_minus_one
from ca_export.rewrites.size_to_scale import multiple as exact_multiple
from ca_export.rewrites.split_view import split_view
from ca_export.tracing import example_input
from ca_export.verify.lossy import GATE_SEEDS, lossy_gate, torch_runner
from ca_export.verify.ncnn_runtime import NcnnRunner
from ca_export.verify.parity import (
    GateResult,
    gate_inputs,
    one_per_size,
    runner_gate,
)
from ca_export.verify.tolerances import tolerance, user_tolerance

FORM = "ncnn"
HEAD_PASSES = (grid_from_map, fill_from_map, split_view, broadcast_expand, reshape_minus_one)
"""The size-safe passes outside CA blocks, in order: ``split_view`` takes the views
``reshape_minus_one`` cannot, ``broadcast_expand`` the expands of the grids."""
PRECISIONS = ("fp32", "fp16")
FP16_METHOD = "fp16 weights (pnnx), fp16 storage and arithmetic in ncnn, fp32 inputs and outputs"


@dataclass
class NcnnJob(ModelJob):
    """What the user asked ``ca-export ncnn`` for; ``output`` is the stem ``OUT`` (or
    ``OUT.ncnn.param``). ``dynamic`` (the default) is the size-safe model; without it,
    the ``--fixed-size`` one."""

    dynamic: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.output = ncnn.stem_of(self.output)
        if self.precision not in PRECISIONS:
            raise BadInputError(
                f"ncnn precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}"
            )

    @property
    def fixed_size(self) -> bool:
        """Whether the model is right at the traced size only."""
        return not self.dynamic

    @property
    def files(self) -> tuple[Path, Path, Path]:
        """The param file, the weights and the metadata file."""
        param, weights = ncnn.files_of(self.output)
        return param, weights, metadata_path(self.output)

    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline (``export_ncnn``)."""
        return export_ncnn(self, progress)

    def writes(self) -> list[Output]:
        """The files this job writes."""
        param, weights, meta = self.files
        return [Output(param, "ncnn_param"), Output(weights, "ncnn_bin"), Output(meta, "json")]


def validate(job: NcnnJob) -> None:
    """Refuse, before any heavy work, what cannot be converted or written as asked."""
    guard(job.reads(), job.writes())
    ncnn.EXTRA.require()


def export_ncnn(job: NcnnJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole ncnn pipeline; the report says whether every check passed."""
    validate(job)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "ncnn", list(job.input_shape), job.dynamic, job.rewrite
    )
    prepared = job.prepare(stage, report, form=FORM)
    sizes = keep_sizes(job, prepared, report) if job.dynamic else SizeSafe()
    multiple = sizes.multiple
    _, c, h, w = job.input_shape
    with stage("convert"):
        example = example_input((1, c, h, w))
        converted = ncnn.convert(prepared.program.module(), example, second=sizes.second)
        layers = ncnn.parse_param(converted.param)
    report.op_counts_after = ncnn.layer_counts(layers)
    structure = structure_check(layers, job.fixed_size, tuple(job.input_shape), multiple)
    report.structure = structure
    if job.fixed_size:
        report.warnings.append(fixed_size_note(job.input_shape))
    param, weights, meta = job.files
    with staging(), scratch(job.output) as folder:
        staged_param, staged_bin = ncnn.files_of(folder / job.output.name)
        staged_param.write_text(converted.param)
        staged_bin.write_bytes(converted.weights)
        with stage("gate"):
            runner = NcnnRunner(staged_param, staged_bin)
            inputs = gate_inputs(prepared.traced, job.input_shape, prepared.square_only)
            if not structure.ok and isinstance(structure.figures, NcnnFigures):
                # A pinned size can crash ncnn at other sizes: gate the traced one only.
                inputs = [(s, x) for s, x in inputs if tuple(x.shape) == job.input_shape]
                report.warnings.append(pinned_note(structure.figures.baked_sizes))
            names = prepared.traced.output_names
            gate = runner_gate(
                prepared.module, runner.run, names, inputs, BACKEND, prepared.gates.bounds
            )
            per_size = one_per_size(inputs)
            program, blocks, bounds = (
                prepared.traced.program,
                prepared.blocks,
                prepared.gates.bounds,
            )
            inside = runner.block_gate(program, blocks, per_size, bounds) if blocks else None
            if isinstance(inside, str):
                report.warnings.append(f"the per-block gate in ncnn did not run: {inside}")
            runtime = inside if isinstance(inside, GateResult) else None
            report.parity = with_block_gate(prepared, gate, inputs, runtime)
            pinned = pinned_elsewhere(gate, job.input_shape)
            if pinned is not None:
                report.warnings.append(pinned)
        if job.precision == "fp16" and report.passed:
            files = (staged_param, staged_bin)
            converted = lower_fp16(job, prepared, sizes.second, files, stage, report)
        if report.passed:
            with stage("write"):
                publish(staged_param, param)
                publish(staged_bin, weights)
                write_text(json.dumps(metadata(job, multiple), indent=2) + "\n", meta)
                report.artifact = {
                    "path": str(param),
                    "weights": str(weights),
                    "metadata": str(meta),
                    "bytes": len(converted.weights),
                    "fixed_size": job.fixed_size,
                }
    report.stages = stage.times
    return report


@dataclass(frozen=True)
class SizeSafe:
    """How a converted model follows the input size: the H and W multiples it is exact at,
    and the second input shape pnnx is given (None: none needed, or ``--fixed-size``)."""

    multiple: tuple[int, int] = (1, 1)
    second: tuple[int, ...] | None = None


def keep_sizes(job: NcnnJob, prepared: Prepared, report: ExportReport) -> SizeSafe:
    """Make the size-safe program's upsamples follow the input size (by scale factor) and
    its head read its sizes from the maps (``HEAD_PASSES``). Exit 2 (``BadInputError``)
    where the input size is not a multiple the upsamples are exact at, or where another op
    would hold the traced size in ncnn.

    pnnx is given a second input shape where a reshape's output holds the input's H or W
    (twice the height and three times the width, or twice both for a model of square
    inputs: multiples of whatever H and W are): its ``-1`` then follows the input size."""
    scaled = scale_upsamples(prepared.program)
    report.notices += [f"upsample {node}: {change}" for node, change in scaled.applied.items()]
    for head_pass in HEAD_PASSES:
        done = head_pass(prepared.program)
        report.notices += [f"{done.name} {node}: {change}" for node, change in done.applied.items()]
    found = ncnn.pinned_ops(prepared.program)
    pinned = list(dict.fromkeys(p.op for p in found if not p.by_shape))
    if pinned:
        left = "".join(f" ({op}: {why})" for op, why in scaled.skipped.items())
        raise BadInputError(
            f"{job.model} cannot be size-safe in ncnn: TorchScript and pnnx would fix the "
            f"traced size in {', '.join(pinned)}{left}; convert with --fixed-size at the size "
            "you run"
        )
    _, c, h, w = job.input_shape
    second = (1, c, 2 * h, (2 if prepared.square_only else 3) * w) if found else None
    mh, mw = exact_multiple(scaled)
    if (mh, mw) == (1, 1):
        return SizeSafe(second=second)
    if h % mh or w % mw:
        raise BadInputError(
            f"{job.model} is size-safe in ncnn only where H is a multiple of {mh} and W of "
            f"{mw}; {h}x{w} is not (or convert with --fixed-size)"
        )
    report.add(Check.judged("flexible_sizes", True, ValueFigures({"multiple": [mh, mw]})))
    report.warnings.append(
        f"the model is exact where H is a multiple of {mh} and W of {mw} (recorded as "
        "hw_multiple in the metadata; verify checks it); ncnn runs other sizes without an error"
    )
    return SizeSafe((mh, mw), second)


def lower_fp16(
    job: NcnnJob,
    prepared: Prepared,
    second: tuple[int, ...] | None,
    files: tuple[Path, Path],
    stage: Stages,
    report: ExportReport,
) -> ncnn.Converted:
    """Convert again with fp16 weights (and pnnx's ``second`` input shape) into ``files``
    (param, weights) and record the lossy gate of it, run with fp16 storage and
    arithmetic, as the ``precision`` check."""
    _, c, h, w = job.input_shape
    param, weights = files
    with stage("fp16"):
        example = example_input((1, c, h, w))
        converted = ncnn.convert(prepared.program.module(), example, True, second)
        param.write_text(converted.param)
        weights.write_bytes(converted.weights)
    with stage("lossy gate"):
        runner = NcnnRunner(param, weights, fp16=True)
        inputs = [(f"seed {s}", example_input(job.input_shape, s).numpy()) for s in GATE_SEEDS]
        tol = user_tolerance(tolerance("fp16", BACKEND), *prepared.gates.bounds)
        names = prepared.traced.output_names
        gate = lossy_gate(
            torch_runner(prepared.module), runner.run, names, inputs, "fp16", BACKEND, tol
        )
    figures = LossyFigures.of(gate, "PyTorch fp32", method=FP16_METHOD)
    report.add(Check.judged("precision", gate.passed, figures))
    return converted


def pinned_elsewhere(gate: GateResult, input_shape: tuple[int, ...]) -> str | None:
    """What to say when the model is right at the traced size and wrong only at others: a
    layer pnnx pinned to the traced size, outside the CA blocks (which the ncnn form keeps
    size-safe), or None."""
    traced = tuple(input_shape[2:])
    failed = {
        case.input_shape[2:] for case in gate.cases if not all(c.passed for c in case.comparisons)
    }
    if not failed or traced in failed:
        return None
    others = ", ".join("x".join(map(str, s)) for s in sorted(failed))
    return (
        f"right at {'x'.join(map(str, traced))} but not at {others}: a layer outside the CA "
        "blocks holds the traced size in ncnn (pnnx pins e.g. an interpolation's output size "
        "or a detection head's anchor grid); convert with --fixed-size at the size you run"
    )


def pinned_note(baked: tuple[str, ...]) -> str:
    """What to say of a size-safe conversion in which pnnx pinned the traced size."""
    return (
        f"pnnx pinned the traced size in {', '.join(baked)}: the model would be wrong (or "
        "crash ncnn) at other sizes, so it was gated at the traced size only and not "
        "written; convert with --fixed-size at the size you run"
    )


def fixed_size_note(input_shape: tuple[int, ...]) -> str:
    """What the report says of a ``--fixed-size`` model."""
    size = "x".join(map(str, input_shape[1:]))
    return (
        f"--fixed-size: the model is right only at {size}; ncnn runs it at other sizes "
        "without an error and gives wrong outputs"
    )


def metadata(job: NcnnJob, multiple: tuple[int, int] = (1, 1)) -> dict[str, object]:
    """The companion metadata: what the model is, and the one size it is valid at (or the
    H and W multiples it is exact at)."""
    return {
        "format": "ncnn",
        "ca_export": __version__,
        "model": job.model,
        "precision": job.precision,
        "input_shape": list(job.input_shape),
        "fixed_size": job.fixed_size,
        "valid_sizes": [list(job.input_shape[2:])] if job.fixed_size else valid_sizes(multiple),
        "hw_multiple": list(multiple),
    }


def valid_sizes(multiple: tuple[int, int]) -> str:
    """The sizes a size-safe model is exact at, as the metadata says them."""
    return "any" if multiple == (1, 1) else "H a multiple of {}, W of {}".format(*multiple)


def structure_check(
    layers: list[ncnn.Layer],
    fixed_size: bool,
    input_shape: tuple[int, ...],
    multiple: tuple[int, int] = (1, 1),
) -> Check:
    """A size-safe model holds no layer with a baked traced size; a fixed-size one may."""
    baked = tuple(ncnn.baked_sizes(layers))
    if fixed_size:
        _, _, h, w = input_shape
        return Check.judged("structure", True, NcnnFigures(len(layers), baked, (h, w)))
    return Check.judged("structure", not baked, NcnnFigures(len(layers), baked, None, multiple))
