"""The ``optimize`` pipeline for ONNX files: load -> normalize -> detect -> rewrite ->
[dynamic] -> check -> gate -> write.

``normalize`` folds constants (onnxscript's folder) so a file as the TorchScript-based
exporter writes it, without a simplifier, reads like its simplified twin; the gate
compares the file as read with the result, so it covers normalisation too. When no
block is found the report says why: every pooled concat skipped with its reason, and a
shape inference failure as a warning.

The gate runs the input file and the rewritten one in ONNX Runtime on the same seeded
inputs at the file's input size; the output file is written (atomically) only when it
passes. A file without CA blocks is left alone unless ``force_write`` is set.
With a lossy ``precision`` the file to write is then converted and gated against the
input file (``pipeline.precision.lower``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import helper

from ca_export import __version__
from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export import onnx as onnx_export
from ca_export.export.precision import calibration_files
from ca_export.files import Output, guard, write_atomic
from ca_export.onnx_graph import make_dynamic, normalize, owners
from ca_export.patterns import OnnxBlock
from ca_export.patterns.coordatt import CA_ONLY_OPS
from ca_export.pipeline.common import Progress, Stages, quiet
from ca_export.pipeline.precision import Lowering, PrecisionRequest, lower
from ca_export.report import BlockReport, Check, OptimizeReport, Verdict, gate_check
from ca_export.report.figures import StructureFigures
from ca_export.rewrites import DEFAULT_TARGET, form_of, rewrite_model
from ca_export.verify.parity import SEEDS, CaseResult, GateResult, Judged, judge
from ca_export.verify.runtime import cpu_session
from ca_export.verify.tolerances import tolerance, user_tolerance

Feeds = dict[str, np.ndarray]


@dataclass
class OptimizeJob:
    """What the user asked ``ca-export optimize`` for."""

    source: Path
    output: Path
    dynamic: bool = False
    force_write: bool = False
    skip_passes: tuple[str, ...] = ()
    precision: PrecisionRequest = field(default_factory=PrecisionRequest)
    target: str = DEFAULT_TARGET
    bounds: tuple[float | None, float | None] = (None, None)
    """The user's ``--rtol`` and ``--atol``."""

    def reads(self) -> list[Path]:
        """The files this job reads."""
        return [self.source, *calibration_files(self.precision.calibration)]

    @property
    def lowering(self) -> PrecisionRequest:
        """The precision request, its lossy gate under the user's bounds."""
        return replace(self.precision, bounds=self.bounds)

    def writes(self) -> list[Output]:
        """The files this job writes (the output may replace the source in place)."""
        return [Output(self.output, "onnx")]


@dataclass(frozen=True)
class SourceFile:
    """The load stage's result: IN as read, its input shapes, and the calibration samples a
    lossy precision asks for (none for fp32)."""

    model: onnx.ModelProto
    shapes: dict[str, list[int]]
    samples: tuple[tuple[str, np.ndarray], ...] = ()


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read (with any external data beside it) and validate an ONNX file."""
    if path.is_dir():
        raise BadInputError(f"cannot read {str(path)!r}: it is a folder")
    if not path.is_file():
        raise BadInputError(f"cannot read {str(path)!r}: no such file")
    try:
        model = onnx.load(str(path))
    except OSError as err:
        raise BadInputError(f"cannot read {str(path)!r}: {err.strerror}") from None
    except onnx.checker.ValidationError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"cannot read {str(path)!r}: {first}") from None
    except (DecodeError, ValueError, RuntimeError):
        raise BadInputError(f"{str(path)!r} is not an ONNX model (or is truncated)") from None
    if not model.graph.node or not model.graph.output:
        raise BadInputError(f"{str(path)!r} is not an ONNX model (no graph)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"{str(path)!r} is not a valid ONNX model: {first}") from None
    return model


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of the graph inputs; a symbolic batch counts as 1."""
    initializers = {i.name for i in model.graph.initializer}
    shapes = {}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        dims = []
        for i, d in enumerate(info.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            elif i == 0:
                dims.append(1)
            else:
                raise BadInputError(
                    f"input {info.name!r} has a symbolic dim {i} ({d.dim_param or '?'}); "
                    "optimize needs the file's H and W"
                )
        shapes[info.name] = dims
    return shapes


def seeded_feeds(model: onnx.ModelProto, shapes: dict[str, list[int]], seed: int) -> Feeds:
    """Standard-normal inputs of the given shapes, one generator per seed."""
    rng = np.random.default_rng(seed)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    feeds = {}
    for name, shape in shapes.items():
        dtype = helper.tensor_dtype_to_np_dtype(types[name])
        if not np.issubdtype(dtype, np.floating):
            raise BadInputError(f"input {name!r} is {dtype}; only float inputs can be gated")
        feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


_session = functools.partial(cpu_session, error=CheckFailedError)
"""A session of a model ``optimize`` made or read; one it cannot load fails the run."""

PERTURB_ULPS = 2
"""How many ulps each input element moves to measure the input file's own sensitivity."""


def file_gate(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    shapes: dict[str, list[int]],
    tolerances: tuple[float | None, float | None] = (None, None),
) -> GateResult:
    """Run both models on seeded inputs and judge every output of ``after`` by ``before``'s.

    No PyTorch model is at hand, so the input file's own fp32 noise is estimated from
    the file, for an input where ``after`` is not within ``rel`` of it: ``before`` run
    with ONNX Runtime's optimisations off (other kernels, other summation orders), and
    on the input moved by ``PERTURB_ULPS`` ulps per element (its sensitivity to
    rounding). Both are the alike runs of ``verify.metrics.compare``.
    """
    tol = user_tolerance(tolerance("float32", "onnxruntime-cpu"), *tolerances)
    reference, candidate = _session(before, "the input file"), _session(after, "the result")
    plain: list[ort.InferenceSession] = []
    names = [o.name for o in before.graph.output]
    result = GateResult("onnxruntime-cpu", tolerance=tol)

    def noise(feeds: Feeds, expected: list[np.ndarray]) -> Judged:
        if not plain:
            plain.append(
                _session(before, "the input file", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            )
        rng = np.random.default_rng(0)
        moved = {
            k: (v + PERTURB_ULPS * np.spacing(v) * rng.choice([-1, 1], v.shape)).astype(v.dtype)
            for k, v in feeds.items()
        }
        runs = [plain[0].run(names, feeds), reference.run(names, moved)]
        return expected, [[run[i] for run in runs] for i in range(len(names))]

    for seed in SEEDS:
        feeds = seeded_feeds(before, shapes, seed)
        expected = reference.run(names, feeds)
        got = candidate.run(names, feeds)
        comparisons = judge(names, expected, got, tol, functools.partial(noise, feeds, expected))
        shape = tuple(next(iter(shapes.values())))
        result.cases.append(CaseResult(shape, seed, comparisons))
    return result


def other_size(shapes: dict[str, list[int]], square: bool) -> dict[str, list[int]]:
    """Input shapes at a second size: H doubled and W kept (both doubled if square only), so
    every divisibility the file's size had holds (a stride-32 detector runs there too)."""
    out = {}
    for name, (n, c, h, w) in ((k, v) for k, v in shapes.items() if len(v) == 4):
        out[name] = [n, c, 2 * h, 2 * w] if square else [n, c, 2 * h, w]
    return out


def dynamic_check(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> dict[str, object]:
    """Run the dynamic model at another size: it must load, run and give finite outputs."""
    feeds = seeded_feeds(model, shapes, SEEDS[0])
    quiet_run = ort.RunOptions()
    quiet_run.log_severity_level = 4
    try:
        outs = _session(model, "the dynamic result").run(None, feeds, quiet_run)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        return {"passed": False, "error": first}
    finite = all(np.isfinite(o).all() for o in outs)
    return {"passed": finite, "output_shapes": [list(o.shape) for o in outs]}


def ca_only_left(model: onnx.ModelProto | ir.Graph, block: OnnxBlock) -> dict[str, int]:
    """Transpose/Concat/Split/Slice/Shape/Gather nodes of a block still in ``model``: the
    block's own that survived, any the rewrite added (named after the block), and the
    shape arithmetic only they read (``onnx_graph.owners``)."""
    graph = model if isinstance(model, ir.Graph) else ir.from_proto(model).graph
    matched = {o.name for op in block.owned for o in op.outputs}
    prefix = f"{block.name}/ca_"
    seeds = {
        node: 0
        for node in graph
        if (node.name or "").startswith(prefix) or any(o.name in matched for o in node.outputs)
    }
    owner = owners.grow(graph, seeds, owners.shape_arithmetic(graph))
    return owners.counts(owner, 0, CA_ONLY_OPS)


def _block_report(block: OnnxBlock, model: ir.Graph) -> BlockReport:
    """The report entry of a rewritten block."""
    entry = BlockReport.of(block)
    entry.rewritten = True
    entry.ca_only_nodes_before = block.ca_only_nodes()
    entry.ca_only_nodes_after = ca_only_left(model, block)
    return entry


def optimize_onnx(job: OptimizeJob, progress: Progress = quiet) -> OptimizeReport:
    """Rewrite the CA blocks of an ONNX file; the report says what was found and checked."""
    guard(job.reads(), job.writes(), in_place=[job.output])
    job.precision.check()
    stage = Stages(progress)
    with stage("load"):
        source = load_onnx(job.source)
        shapes = input_shapes(source)
        cpu_session(source.SerializeToString(), job.source.name)
        read = SourceFile(source, shapes, tuple(_calibration(job.precision, shapes)))
    opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = OptimizeReport(str(job.source), __version__, opset, shapes)
    report.dynamic = {"requested": job.dynamic}
    with stage("normalize"):
        norm = normalize(source, keep_sizes=job.dynamic)
    report.normalize = {
        "modified": norm.modified,
        "constants": [norm.constants_before, norm.constants_after],
        "nodes": [norm.nodes_before, norm.nodes_after],
        "reason": norm.reason,
    }
    if norm.reason:
        report.warnings.append(f"file matched as written: {norm.reason}")
    with stage("rewrite"):
        form = form_of(job.target)
        report.target = job.target
        result = rewrite_model(norm.model, static=not job.dynamic, form=form, skip=job.skip_passes)
    report.skipped = [{"node": r.node, "reason": r.reason} for r in result.rejections]
    rewritten = ir.from_proto(result.model).graph
    report.ca_blocks = [_block_report(b, rewritten) for b in result.blocks]
    report.passes = list(result.passes)
    if result.shape_error:
        report.warnings.append(f"ONNX shape inference failed: {result.shape_error}")
    if not result.blocks:
        why = "see the skipped pooled concats" if result.rejections else "no pooled concat"
        report.warnings.append(f"no CA block found ({why}); no block rewritten")
        nothing = f"no CA block found ({why}): nothing rewritten"
        report.structure = Check("structure", Verdict.NOT_RUN, nothing, accepted=True)
        report.parity = Check("parity", Verdict.NOT_RUN, nothing, accepted=True)
        if job.dynamic and not job.force_write:
            reason = "no CA block found: nothing rewritten, nothing written"
            report.dynamic |= {"applied": False, "reason": reason}
        if job.force_write:
            model = _dynamic_copy(source, shapes, report, stage) if job.dynamic else source
            written = _lower(job.lowering, model, read, report, stage)
            if report.passed:
                with stage("write"):
                    report.artifact = write_atomic(written.SerializeToString(), job.output)
        report.stages = stage.times
        return report
    model = result.model
    if job.dynamic:
        with stage("dynamic"):
            square = any(b.findings for b in result.blocks)
            dyn = make_dynamic(model, square)
            report.dynamic |= {"applied": dyn.applied, "reason": dyn.reason, "dims": dyn.dims}
            if dyn.applied:
                model = dyn.model
            else:
                report.warnings.append(f"H/W kept static: {dyn.reason}")
    with stage("check"):
        onnx_export.check(model)
        left = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks)
        report.structure = Check.judged("structure", left == 0, StructureFigures(left))
        report.op_counts_before = onnx_export.op_counts(source)
        report.op_counts_after = onnx_export.op_counts(model)
    with stage("gate"):
        gate = file_gate(source, model, shapes, job.bounds)
        report.parity = gate_check("parity", gate, len(gate.cases))
        if report.dynamic.get("applied"):
            second = other_size(shapes, square)
            ran = dynamic_check(model, second)
            report.dynamic |= {"ran_at": second, **ran}
    if report.passed:
        model = _lower(job.lowering, model, read, report, stage)
    entries = {p.key: p.value for p in source.metadata_props}
    entries |= _metadata(job, report)
    onnx_export.set_metadata(model, entries)
    if report.passed:
        with stage("write"):
            report.artifact = write_atomic(model.SerializeToString(), job.output)
    report.stages = stage.times
    return report


def _dynamic_copy(
    source: onnx.ModelProto, shapes: dict[str, list[int]], report: OptimizeReport, stage: Stages
) -> onnx.ModelProto:
    """``--force-write --dynamic`` on a file without CA blocks: IN with dynamic H/W where
    nothing in it is baked for its size, gated against IN and run at another size; IN as
    it is otherwise (the report says why)."""
    with stage("dynamic"):
        dyn = make_dynamic(source, square=False)
    report.dynamic |= {"applied": dyn.applied, "reason": dyn.reason, "dims": dyn.dims}
    if not dyn.applied:
        report.warnings.append(f"H/W kept static: {dyn.reason}")
        return source
    with stage("gate"):
        gate = file_gate(source, dyn.model, shapes)
        report.parity = gate_check("parity", gate, len(gate.cases))
        second = other_size(shapes, False)
        report.dynamic |= {"ran_at": second, **dynamic_check(dyn.model, second)}
    return dyn.model


def _calibration(
    request: PrecisionRequest, shapes: dict[str, list[int]]
) -> list[tuple[str, np.ndarray]]:
    """Calibration samples for a lossy precision; such a file must have one 4-D input."""
    if request.precision == "fp32":
        return []
    if len(shapes) != 1 or len(next(iter(shapes.values()))) != 4:
        raise BadInputError("--precision fp16/int8 needs a file with one N,C,H,W input")
    n, c, h, w = next(iter(shapes.values()))
    return request.samples((n, c, h, w))


def _lower(
    request: PrecisionRequest,
    model: onnx.ModelProto,
    source: SourceFile,
    report: OptimizeReport,
    stage: Stages,
) -> onnx.ModelProto:
    """``model`` lowered to the requested precision and gated against IN as read, its
    check in ``report`` (fp32: ``model`` as is)."""
    if request.precision == "fp32":
        return model
    shape = tuple(next(iter(source.shapes.values())))
    samples = list(source.samples)
    lowered = lower(Lowering.of_file(request, model, source.model, shape, samples), stage)
    lowered.record(report)
    return lowered.model


def _metadata(job: OptimizeJob, report: OptimizeReport) -> dict[str, str]:
    """The ca_export entries added to the file's own metadata_props."""
    return {
        "ca_export.tool_version": f"ca-export {__version__}",
        "ca_export.optimized_from": job.source.name,
        "ca_export.dynamic": str(bool(report.dynamic.get("applied"))).lower(),
        "ca_export.blocks_found": str(len(report.ca_blocks)),
        "ca_export.blocks_rewritten": str(sum(b.rewritten for b in report.ca_blocks)),
        "ca_export.precision": job.precision.precision,
    }
