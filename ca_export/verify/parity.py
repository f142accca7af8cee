"""Gates: ONNX Runtime against the original model, and each rewritten block against its original.

Both gates run on several seeded inputs and, for dynamic exports, at sizes other than
the traced one. A block's output is compared where the rewrite acts, so a wrong
rewrite is caught even when the network's output would hide it.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.errors import CheckFailedError
from ca_export.tracing import Traced, example_input, output_arrays
from ca_export.verify.metrics import Comparison, compare
from ca_export.verify.runtime import BACKEND as ORT_BACKEND
from ca_export.verify.runtime import cpu_runner
from ca_export.verify.tolerances import Tolerance, tolerance, user_tolerance

SEEDS = (1, 2, 3)


@dataclass
class CaseResult:
    """The comparisons of every output (or block) for one input."""

    input_shape: tuple[int, ...]
    seed: int
    comparisons: list[Comparison]


@dataclass
class GateResult:
    """A gate's verdict with the worst figures and every case."""

    backend: str
    cases: list[CaseResult] = field(default_factory=list)
    tolerance: Tolerance | None = None

    @property
    def passed(self) -> bool:
        """Whether every comparison of every case passed."""
        return all(c.passed for case in self.cases for c in case.comparisons)

    def worst(self, attr: str) -> float:
        """The largest value of a metric over all comparisons."""
        values = [getattr(c, attr) for case in self.cases for c in case.comparisons]
        return max(values, default=0.0)

    @property
    def min_cosine(self) -> float:
        """The smallest cosine over all comparisons."""
        values = [c.cosine for case in self.cases for c in case.comparisons]
        return min(values, default=1.0)

    def failures(self) -> list[str]:
        """One line per failed comparison, naming the output or block and the input."""
        lines = []
        for case in self.cases:
            shape = "x".join(map(str, case.input_shape))
            for c in case.comparisons:
                if not c.passed:
                    lines.append(f"{c.name} at {shape} (seed {case.seed}): {c.describe()}")
        return lines


def gate_inputs(
    traced: Traced, input_shape: tuple[int, ...], square_only: bool
) -> list[tuple[int, torch.Tensor]]:
    """Seeded inputs: several at the traced size and, if dynamic, one at each other size
    (square ones where the model runs on square inputs only; for a bounded trace, sizes
    within its bounds at the traced batch)."""
    n, c, h, w = input_shape
    cases = [(seed, example_input(input_shape, seed)) for seed in SEEDS]
    if traced.bounds is not None:
        others = [(n, c, h2, w2) for h2, w2 in traced.bounds.other_sizes(square_only)]
        cases += [(seed, example_input(s, seed)) for seed, s in zip(SEEDS, others, strict=False)]
    elif traced.dynamic:
        if square_only:
            others = [(2, c, h + 32, h + 32), (1, c, h + 64, h + 64)]
        else:
            others = [(2, c, h + 32, w + 64), (1, c, h + 64, w + 32)]
        cases += [(seed, example_input(s, seed)) for seed, s in zip(SEEDS, others, strict=False)]
    return cases


def onnx_gate(
    model: nn.Module,
    onnx_model: onnx.ModelProto,
    traced: Traced,
    inputs: Sequence[tuple[int, torch.Tensor]],
    tolerances: tuple[float | None, float | None] = (None, None),
) -> GateResult:
    """Compare ONNX Runtime (CPU) with the original PyTorch model, output by output."""
    run = cpu_runner(onnx_model, "the exported model", traced.input_names[0], traced.output_names)
    return runner_gate(model, run, traced.output_names, inputs, ORT_BACKEND, tolerances)


def runner_gate(
    model: nn.Module,
    run: Callable[[np.ndarray], list[np.ndarray]],
    output_names: Sequence[str],
    inputs: Sequence[tuple[int, torch.Tensor]],
    backend: str,
    tolerances: tuple[float | None, float | None] = (None, None),
) -> GateResult:
    """Compare an fp32 artifact's ``run`` on ``backend`` with the original model, per output.

    An input where every output is within ``rel`` of PyTorch fp32's, slice by slice,
    passes as it is. Elsewhere the artifact is judged against a float64 copy's outputs,
    with PyTorch fp32's distance from them as the noise a bound may widen to (see
    ``Tolerance``, ``fp32_runs``); a float64 run costs several fp32 ones, so it is made
    only there.
    """
    tol = user_tolerance(tolerance("float32", backend), *tolerances)
    result = GateResult(backend, tolerance=tol)
    reference = Reference(model)
    for seed, x in inputs:
        with torch.no_grad():
            expected = output_arrays(model(x))
        got = run(x.numpy())
        precise = functools.partial(reference.judged, x, expected)
        comparisons = judge(output_names, expected, got, tol, precise)
        result.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result


class Reference:
    """A model's precise answers for ``judge``: a float64 copy (made once, when first
    needed) and the fp32 runs whose distance from it is the noise."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.precise: list[nn.Module | None] = []

    def judged(self, x: torch.Tensor, own: list[np.ndarray]) -> Judged | None:
        """The float64 outputs for ``x`` and the fp32 runs (``own`` the first), or None
        where the model cannot run in float64."""
        if not self.precise:
            self.precise.append(float64_copy(self.model))
        with torch.no_grad():
            ref64 = run_float64(self.precise[0], x)
        return None if ref64 is None else (ref64, fp32_runs(self.model, x, own))


Judged = tuple[list[np.ndarray], list[list[np.ndarray]]]
"""Reference outputs and, per output, the runs alike the artifact (see ``metrics.compare``)."""


def judge(
    names: Sequence[str],
    expected: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    tol: Tolerance,
    precise: Callable[[], Judged | None],
) -> list[Comparison]:
    """Every output of one input, judged: against ``expected`` (the reference at the
    artifact's precision) with no noise, and where that fails, against ``precise()``'s
    reference with its alike runs as the noise (when it can be had).

    The first comparison costs one reference run; the precise one, made only for an
    input that needs it, costs more (a float64 model, other runs of the reference).
    """
    if len(got) != len(expected):
        raise CheckFailedError(f"the artifact has {len(got)} outputs, the model {len(expected)}")
    comparisons = [compare(n, e, g, tol) for n, e, g in zip(names, expected, got, strict=True)]
    if all(c.passed for c in comparisons):
        return comparisons
    better = precise()
    if better is None:
        return comparisons
    reference, alike = better
    return [
        compare(n, r, g, tol, a) for n, r, g, a in zip(names, reference, got, alike, strict=True)
    ]


def fp32_runs(model: nn.Module, x: torch.Tensor, own: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per output, the model's fp32 runs whose distance from float64 is its noise: ``own``
    (with oneDNN's convolutions) and one with PyTorch's own convolution kernels, which sum
    in other orders. One run is one sample of that noise: on ``yolov5_ca`` at 224 (seeds
    1-3), the correct ``--fixed-size`` ncnn conversion's worst column is 4.55 times the
    first run's noise (over the bound of 4) and 2.75 times the larger of the two."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            other = output_arrays(model(x))
    return [[a, b] for a, b in zip(own, other, strict=True)]


def float64_copy(model: nn.Module) -> nn.Module | None:
    """A float64 copy of the model to measure its own fp32 noise, or None if it cannot run."""
    try:
        return copy.deepcopy(model).double()
    except Exception:
        return None


def run_float64(model: nn.Module | None, x: torch.Tensor) -> list[np.ndarray] | None:
    """The float64 model's outputs, or None where the model cannot run in float64."""
    if model is None:
        return None
    try:
        return output_arrays(model(x.double()))
    except Exception:
        return None


class _Recorder(torch.fx.Interpreter):
    """Runs the part of a graph module that ``wanted`` nodes depend on, keeps their values,
    and substitutes ``given`` ones (whose own inputs are then not run)."""

    def __init__(
        self,
        module: torch.fx.GraphModule,
        wanted: set[str],
        given: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.given = given or {}
        self.seen: dict[str, torch.Tensor] = {}
        self.needed = self._needed(module.graph)

    def _needed(self, graph: torch.fx.Graph) -> set[str]:
        """The nodes the wanted values are computed from, stopping at given ones."""
        stack = [n for n in graph.nodes if n.name in self.wanted]
        needed: set[str] = set()
        while stack:
            node = stack.pop()
            if node.name in needed:
                continue
            needed.add(node.name)
            if node.name not in self.given:
                stack.extend(node.all_input_nodes)
        return needed

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.name not in self.needed and n.op not in ("placeholder", "output"):
            return None
        value = self.given[n.name] if n.name in self.given else super().run_node(n)
        if n.name in self.wanted:
            self.seen[n.name] = value
        return value


def block_gate(
    original: ExportedProgram,
    rewritten: ExportedProgram,
    blocks: Sequence[tuple[str, str, str]],
    inputs: Sequence[tuple[int, torch.Tensor]],
) -> GateResult:
    """Compare each rewritten block (module, source node, output node) with the original.

    Every rewritten block reads the original block's input, so each comparison shows
    that block's own error, not what earlier layers accumulated.
    """
    tol = tolerance("float32", "torch")
    sources = {source for _, source, _ in blocks}
    outputs = {output for _, _, output in blocks}
    before_module, after_module = original.module(), rewritten.module()
    result = GateResult("torch")
    for seed, x in inputs:
        with torch.no_grad():
            before = _Recorder(before_module, sources | outputs)
            before.run(x)
            given = {name: before.seen[name] for name in sources}
            after = _Recorder(after_module, outputs, given)
            after.run(x)
        comparisons = [
            compare(f"block {module}", before.seen[out].numpy(), after.seen[out].numpy(), tol)
            for module, _, out in blocks
        ]
        result.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result


class BlockModel(nn.Module):
    """One block of a program as a model of its own: its input in, its output out (the
    program's ``input`` only fixes the sizes the block may read from it)."""

    def __init__(
        self, module: torch.fx.GraphModule, source: str, output: str, input: torch.Tensor
    ) -> None:
        super().__init__()
        self.module, self.source, self.output = module, source, output
        self.input = input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recorder = _Recorder(self.module, {self.output}, {self.source: x})
        recorder.run(self.input)
        return recorder.seen[self.output]


def one_per_size(inputs: Sequence[tuple[int, torch.Tensor]]) -> list[tuple[int, torch.Tensor]]:
    """The first input of each size: a block is exact or wrong at a size whatever the seed."""
    sizes: dict[tuple[int, ...], tuple[int, torch.Tensor]] = {}
    for seed, x in inputs:
        sizes.setdefault(tuple(x.shape), (seed, x))
    return list(sizes.values())


def block_values(
    program: ExportedProgram, nodes: set[str], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The values of ``nodes`` when ``program`` runs on ``x``."""
    with torch.no_grad():
        recorder = _Recorder(program.module(), nodes)
        recorder.run(x)
    return recorder.seen


def runtime_block_gate(
    program: ExportedProgram,
    blocks: Sequence[tuple[str, str, str]],
    run: Callable[[int, np.ndarray], np.ndarray],
    inputs: Sequence[tuple[int, torch.Tensor]],
    backend: str,
    tolerances: tuple[float | None, float | None] = (None, None),
) -> GateResult:
    """Compare each block (module, source node, output node) of ``program`` as the
    artifact runs it, ``run(k, x)`` computing block ``k`` from its input ``x`` alone.

    Each block is fed the program's own input to it, so each comparison shows that
    block's error in the artifact, not what earlier layers accumulated; it is judged as
    ``runner_gate`` judges an output (``rel`` of PyTorch fp32, else float64 with two fp32
    runs as the noise, under the artifact's row of the table)."""
    tol = user_tolerance(tolerance("float32", backend), *tolerances)
    module = program.module()
    sources = {source for _, source, _ in blocks}
    outputs = {output for _, _, output in blocks}
    result = GateResult(backend, tolerance=tol)
    for seed, x in inputs:
        with torch.no_grad():
            recorder = _Recorder(module, sources | outputs)
            recorder.run(x)
        comparisons = []
        for k, (name, source, output) in enumerate(blocks):
            given = recorder.seen[source]
            expected = [recorder.seen[output].numpy()]
            got = [run(k, given.numpy())]
            reference = Reference(BlockModel(module, source, output, x))
            precise = functools.partial(reference.judged, given, expected)
            comparisons += judge([f"block {name}"], expected, got, tol, precise)
        result.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result
