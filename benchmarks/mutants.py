"""Wrong variants of one CA block (mutants), their artifacts, and each gate's margin on them.

A mutant is a deep copy of a sample model whose chosen CA block (``BLOCKS``) computes
something else: its ``forward`` replaced by a mutated copy, or one parameter changed.
Each mutant, and the original model (``CORRECT``), is exported with the library's own
stages (``tracing.trace``, ``rewrites.rewrite`` where blocks are found, the ONNX emitter
and onnxsim, coremltools, the XNNPACK lowering) and judged by each gate against the
original model, as the pipelines judge an export:

- ``onnx``: ``verify.parity.onnx_gate`` (ONNX Runtime against PyTorch);
- ``coreml``: ``verify.mil.parity.mil_parity`` of an fp32 ML program (NumPy evaluator);
- ``executorch``: ``verify.parity.runner_gate`` of the .pte in ExecuTorch's runtime;
- ``optimize``: ``pipeline.optimize.file_gate`` of the mutant's ONNX file against the stock
  (not rewritten) export of the original; the correct row judges what ``optimize`` makes
  of that stock file (``normalize`` then ``rewrite_model``);
- ``verify``: ``ca-export verify MODEL FILE.onnx`` (exit 1 expected for a mutant);
- ``ncnn``: ``verify.parity.runner_gate`` of the ``--fixed-size`` ncnn conversion (pnnx)
  in ncnn's runtime (needs the ncnn extra; not in ``GATES``).

A gate's ``margin`` is its largest error over bound: at most 1 passes. Used by
``tests/verify/test_mutants.py`` and ``python -m benchmarks.mutant_margins``.
"""

from __future__ import annotations

import copy
import json
import math
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import torch
from click.testing import CliRunner
from torch import nn
from torch.export import ExportedProgram

from ca_export.export import coreml as coreml_export
from ca_export.export import executorch as et
from ca_export.export import onnx as onnx_export
from ca_export.export import opset as opset_export
from ca_export.loading import load_model
from ca_export.onnx_graph import normalize
from ca_export.patterns import find
from ca_export.pipeline.optimize import file_gate, input_shapes
from ca_export.rewrites import rewrite, rewrite_model
from ca_export.tracing import Traced, example_input, output_arrays, trace
from ca_export.verify.metrics import relative_error
from ca_export.verify.mil.parity import NotVerified, mil_parity
from ca_export.verify.parity import GateResult, gate_inputs, onnx_gate, runner_gate
from sample_models.mobilenetv2 import CoordAtt

CORRECT = "correct"
GATES = ("onnx", "coreml", "executorch", "optimize", "verify")
BLOCKS = {"yolov5_ca": "model.5", "mobilenetv2_ca": "features.8.conv.6"}
"""The CA block each model's mutants change: YOLOv5's first (after the stride-8 C3, the
largest map), MobileNetV2-CA's 7th of 16 (the second block of the 64-channel stage)."""
BN_EPS = 1e-3
"""The ``bn_eps`` mutant's BN epsilon (the block's is 1e-5)."""
CONV1_SCALE = 1.01
"""The ``conv1_scaled`` mutant's factor on the shared 1x1 conv's weights."""


def _strips(
    block: CoordAtt, x: torch.Tensor, h_pool: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's shared stem on its two strips, the H strip pooled by ``h_pool``
    (``block.pool_h`` as written; ``pool_w`` then ``permute`` pools it over the wrong axis)."""
    _, _, h, w = x.size()
    x_h = h_pool(x)
    x_w = block.pool_w(x).permute(0, 1, 3, 2)
    y = block.act(block.bn1(block.conv1(torch.cat([x_h, x_w], dim=2))))
    x_h, x_w = torch.split(y, [h, w], dim=2)
    return x_h, x_w.permute(0, 1, 3, 2)


def _swapped_gates(self: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    """The block with a_h applied along W and a_w along H (square maps only)."""
    x_h, x_w = _strips(self, x, self.pool_h)
    a_h, a_w = self.conv_h(x_h).sigmoid(), self.conv_w(x_w).sigmoid()
    return x * a_h.permute(0, 1, 3, 2) * a_w.permute(0, 1, 3, 2)


def _no_sigmoid(self: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    """The block with a_h = conv_h(x_h), its sigmoid left out."""
    x_h, x_w = _strips(self, x, self.pool_h)
    return x * self.conv_w(x_w).sigmoid() * self.conv_h(x_h)


def _wrong_axis_pool(self: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    """The block with its H strip pooled over H (as the W strip), not over W (square maps)."""
    x_h, x_w = _strips(self, x, lambda t: self.pool_w(t).permute(0, 1, 3, 2))
    return x * self.conv_w(x_w).sigmoid() * self.conv_h(x_h).sigmoid()


def _identity(self: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    """The block left out: its input passes through."""
    return x


Forward = Callable[[CoordAtt, torch.Tensor], torch.Tensor]


def _patched(forward: Forward) -> Callable[[CoordAtt], None]:
    """A mutation that gives the block ``forward`` in place of its own."""

    def apply(block: CoordAtt) -> None:
        block.forward = types.MethodType(forward, block)  # type: ignore[method-assign]

    return apply


def _scale_conv1(block: CoordAtt) -> None:
    with torch.no_grad():
        block.conv1.weight.mul_(CONV1_SCALE)


def _bn_eps(block: CoordAtt) -> None:
    block.bn1.eps = BN_EPS


MUTANTS: dict[str, Callable[[CoordAtt], None]] = {
    "swapped_gates": _patched(_swapped_gates),
    "no_sigmoid": _patched(_no_sigmoid),
    "wrong_axis_pool": _patched(_wrong_axis_pool),
    "conv1_scaled": _scale_conv1,
    "bn_eps": _bn_eps,
    "identity": _patched(_identity),
}
"""Each mutation, applied in place to one CA block of a copy of the model."""


def mutant(model: nn.Module, name: str, block: str) -> nn.Module:
    """A deep copy of ``model`` whose CA block ``block`` has mutation ``name``."""
    changed = copy.deepcopy(model)
    target = changed.get_submodule(block)
    if not isinstance(target, CoordAtt):
        raise TypeError(f"{block} is a {type(target).__name__}, not a CoordAtt")
    MUTANTS[name](target)
    return changed


@dataclass(frozen=True)
class Row:
    """One gate's verdict on one export: its margin (error over bound) and whether it passed."""

    model: str
    mutant: str
    gate: str
    margin: float
    passed: bool
    note: str = ""


@dataclass
class Subject:
    """One network to export (the original or a mutant), its exports made once each."""

    name: str
    module: nn.Module
    shape: tuple[int, int, int, int]
    cache: dict[str, object] = field(default_factory=dict)

    def program(self, form: str, decompose: bool = True) -> tuple[Traced, ExportedProgram]:
        """Trace (decomposed, or not as for the ONNX emitter), and rewrite the blocks found
        (if any) into ``form``, as the pipelines do."""
        key = f"program-{form}-{decompose}"
        if key not in self.cache:
            traced = trace(self.module, self.shape, dynamic=False, decompose=decompose)
            program = traced.program
            if find(program.graph)[0]:
                program = rewrite(program, static=True, form=form).program
            self.cache[key] = (traced, program)
        return self.cache[key]  # type: ignore[return-value]

    def onnx(self) -> onnx.ModelProto:
        """The ONNX export: emitted at the default opset and simplified."""
        if "onnx" not in self.cache:
            traced, program = self.program("onnx", decompose=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = onnx_export.emit(program, traced, opset_export.export_opset(18))
            self.cache["onnx"] = onnx_export.simplify(raw)[0]
        return self.cache["onnx"]  # type: ignore[return-value]

    def pte(self) -> bytes:
        """The ExecuTorch program, lowered with XNNPACK from the ``xnnpack`` form."""
        if "pte" not in self.cache:
            self.cache["pte"] = et.lower(self.program("xnnpack")[1]).buffer
        return self.cache["pte"]  # type: ignore[return-value]

    def ncnn(self, folder: Path) -> Path:
        """The ncnn param file (weights beside it) of the static ``ncnn`` form, in ``folder``."""
        if "ncnn" not in self.cache:
            from ca_export.export import ncnn

            program = self.program("ncnn")[1]
            converted = ncnn.convert(program.module(), example_input(self.shape))
            param, weights = ncnn.files_of(folder / self.name)
            param.write_text(converted.param)
            weights.write_bytes(converted.weights)
            self.cache["ncnn"] = param
        return self.cache["ncnn"]  # type: ignore[return-value]

    def mlpackage(self, folder: Path) -> Path:
        """The fp32 ML program, converted and saved in ``folder``."""
        if "mlpackage" not in self.cache:
            traced, program = self.program("onnx")
            spec = coreml_export.InputSpec(traced.input_names[0], self.shape)
            target = coreml_export.Target("mlprogram", "fp32")
            converted = coreml_export.convert(program, spec, target, traced.output_names)
            path = folder / f"{self.name}.mlpackage"
            coreml_export.save(converted, path)
            self.cache["mlpackage"] = path
        return self.cache["mlpackage"]  # type: ignore[return-value]


class Bench:
    """One sample model at one size: the original, its mutants, and every gate on each."""

    def __init__(self, model: str, size: int, folder: Path) -> None:
        self.model = model
        self.shape = (1, 3, size, size)
        self.folder = folder
        self.original = load_model(model).module
        self.subjects: dict[str, Subject] = {}
        traced, _ = self.subject(CORRECT).program("onnx", decompose=False)
        self.inputs = gate_inputs(traced, self.shape, square_only=False)
        self._stock: onnx.ModelProto | None = None
        self._noise: float | None = None

    def subject(self, name: str) -> Subject:
        """The original (``CORRECT``) or the named mutant, made once."""
        if name not in self.subjects:
            module = (
                copy.deepcopy(self.original)
                if name == CORRECT
                else mutant(self.original, name, BLOCKS[self.model])
            )
            self.subjects[name] = Subject(f"{self.model}-{name}", module, self.shape)
        return self.subjects[name]

    def stock(self) -> onnx.ModelProto:
        """The original's ONNX export without rewrites: the file ``optimize`` is given."""
        if self._stock is None:
            traced = trace(self.original, self.shape, dynamic=False, decompose=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = onnx_export.emit(traced.program, traced, opset_export.export_opset(18))
            self._stock = onnx_export.simplify(raw)[0]
        return self._stock

    def effect(self, name: str) -> float:
        """How far the mutant's output is from the original's, both in float64: max abs
        difference over the original's RMS, worst over the gate inputs."""
        original = copy.deepcopy(self.original).double()
        changed = copy.deepcopy(self.subject(name).module).double()
        worst = 0.0
        with torch.no_grad():
            for _, x in self.inputs:
                for a, b in zip(
                    output_arrays(original(x.double())),
                    output_arrays(changed(x.double())),
                    strict=True,
                ):
                    worst = max(worst, relative_error(a, b))
        return worst

    def noise(self) -> float:
        """How far PyTorch fp32 is from float64 on the original: max abs error over RMS,
        worst over the gate inputs (what a mutant's effect must stand far above)."""
        if self._noise is not None:
            return self._noise
        exact = copy.deepcopy(self.original).double()
        worst = 0.0
        with torch.no_grad():
            for _, x in self.inputs:
                pairs = zip(
                    output_arrays(exact(x.double())), output_arrays(self.original(x)), strict=True
                )
                worst = max([worst, *(relative_error(a, b) for a, b in pairs)])
        self._noise = worst
        return worst

    def gate(self, name: str, gate: str) -> Row:
        """Run ``gate`` on the export of ``name`` against the original model."""
        subject = self.subject(name)
        traced, _ = subject.program("onnx", decompose=False)
        if gate == "onnx":
            result = onnx_gate(self.original, subject.onnx(), traced, self.inputs)
        elif gate == "optimize":
            after = subject.onnx() if name != CORRECT else self._optimized()
            result = file_gate(self.stock(), after, input_shapes(self.stock()))
        elif gate == "executorch":
            runner = et.PteRunner(subject.pte(), subject.name)
            result = runner_gate(
                self.original, runner.run, traced.output_names, self.inputs, et.BACKEND
            )
        elif gate == "coreml":
            package = subject.mlpackage(self.folder)
            found = mil_parity(package, self.original, self.inputs, "fp32")
            if isinstance(found, NotVerified):
                return Row(self.model, name, gate, math.nan, False, found.reason)
            result = found
        elif gate == "verify":
            return self._verify(subject)
        elif gate == "ncnn":
            from ca_export.export.ncnn import BACKEND, files_of, stem_of
            from ca_export.verify.ncnn_runtime import NcnnRunner

            param, weights = files_of(stem_of(subject.ncnn(self.folder)))
            run = NcnnRunner(param, weights).run
            result = runner_gate(self.original, run, traced.output_names, self.inputs, BACKEND)
        else:
            raise ValueError(f"no gate {gate!r}")
        return self._row(name, gate, result)

    def _optimized(self) -> onnx.ModelProto:
        """What ``optimize`` makes of the stock file: normalised, its blocks rewritten."""
        return rewrite_model(normalize(self.stock()).model, static=True).model

    def _row(self, name: str, gate: str, result: GateResult) -> Row:
        failures = result.failures()
        return Row(
            self.model, name, gate, result.worst("margin"), result.passed, (failures or [""])[0]
        )

    def _verify(self, subject: Subject) -> Row:
        """``ca-export verify MODEL FILE.onnx --report R``; the margin read from the report."""
        from cli.main import cli

        path = self.folder / f"{subject.name}.onnx"
        onnx.save(subject.onnx(), path)
        report = path.with_suffix(".json")
        result = CliRunner().invoke(cli, ["verify", self.model, str(path), "--report", str(report)])
        name = subject.name.removeprefix(f"{self.model}-")
        if result.exit_code not in (0, 1) or not report.is_file():
            note = f"exit {result.exit_code}: {result.output[-300:]}"
            return Row(self.model, name, "verify", math.nan, False, note)
        data = json.loads(report.read_text())
        margins = [
            c["margin"]
            for artifact in data["artifacts"]
            for case in artifact["cases"]
            for c in case["comparisons"]
        ]
        passed = result.exit_code == 0
        return Row(self.model, name, "verify", max(margins, default=math.nan), passed)


def table(rows: Sequence[Row], effects: dict[tuple[str, str], float] | None = None) -> str:
    """Margins as a Markdown table: one line per (model, mutant), one column per gate
    (``fail``/``pass`` after each margin), and the float64 effect where measured."""
    gates = [g for g in GATES if any(r.gate == g for r in rows)]
    effects = effects or {}
    head = ["model", "export", *gates] + (["fp64 rel diff"] if effects else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r.model, r.mutant) for r in rows))
    found = {(r.model, r.mutant, r.gate): r for r in rows}
    for model, name in keys:
        cells = [model, name]
        for gate in gates:
            row = found.get((model, name, gate))
            cells.append(
                "" if row is None else f"{row.margin:.3g} {'pass' if row.passed else 'fail'}"
            )
        if effects:
            effect = effects.get((model, name))
            cells.append("" if effect is None else f"{effect:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wrong_verdicts(rows: Sequence[Row]) -> list[Row]:
    """Rows whose verdict is wrong: a mutant that passed, or a correct export that failed."""
    return [r for r in rows if r.passed == (r.mutant != CORRECT) or math.isnan(r.margin)]


def to_json(rows: Sequence[Row]) -> str:
    """Rows as a JSON list of objects."""
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"
