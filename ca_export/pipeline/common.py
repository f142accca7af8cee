"""Stages every export shares: load -> trace -> find -> rewrite, timed and announced.

Each stage takes one typed input and returns one typed result (``Front`` -> ``Loaded`` ->
``Captured`` -> ``Found`` -> ``Rewritten``); ``prepare`` runs them in order and records
them in the report.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export import interrupts
from ca_export.errors import BadInputError, CAExportError, StageError
from ca_export.export import ncnn
from ca_export.files import Output
from ca_export.loading import load_model, model_files
from ca_export.patterns import AtenBlock, Rejection, find
from ca_export.report import BlockReport, Check, ExportReport, GateFigures, InspectReport
from ca_export.rewrites import DEFAULT_TARGET, form_of, rewrite
from ca_export.rewrites.passes import PassResult
from ca_export.tracing import Traced, guard_memory, trace
from ca_export.verify.accuracy import DEFAULT_MAX_DROP, EvalSet, read_eval_set
from ca_export.verify.parity import GateResult, block_gate, one_per_size

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


class Stages:
    """Times named stages and announces each one as it starts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the stage; an unexpected exception becomes a ``StageError`` naming it.

        A signal that third-party code swallowed is raised again when the stage starts
        and ends, and wins over the stage's own error (``interrupts.check``).
        """
        interrupts.check()
        self.progress(name)
        start = time.perf_counter()
        try:
            yield
        except CAExportError:
            interrupts.check()
            raise
        except Exception as err:
            interrupts.check()
            raise StageError(name, err) from err
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)
        interrupts.check()


def _square_only(model: nn.Module, input_shape: tuple[int, ...]) -> BadInputError | None:
    """When a non-square trace failed: the error naming the square-only CA blocks, if any."""
    n, c, h, w = input_shape
    if h == w:
        return None
    square = trace(model, (n, c, h, h), dynamic=False)
    quirky = [b.module for b in find(square.program.graph)[0] if b.square_only]
    if not quirky:
        return None
    return BadInputError(
        f"{', '.join(quirky)}: a CA gate is applied along the other spatial axis (no "
        f"transpose back after the split), so the model runs on square inputs only, "
        f"not {h}x{w}; use a square --input-shape"
    )


@dataclass(frozen=True)
class GateOptions:
    """What the user set of the gates: ``--rtol`` and ``--atol`` (see
    ``verify.tolerances.user_tolerance``), ``--allow-unverified``, and the labelled set of
    the accuracy gate with its bound (``--eval-data``, ``--max-accuracy-drop``; see
    ``verify.accuracy``)."""

    rtol: float | None = None
    atol: float | None = None
    allow_unverified: bool = False
    eval_data: Path | None = None
    max_accuracy_drop: float | None = None

    def eval_set(self, input_shape: tuple[int, int, int, int]) -> EvalSet | None:
        """The labelled set, read (bad input exits 2 before any work), or None."""
        if self.eval_data is None:
            if self.max_accuracy_drop is not None:
                raise BadInputError("--max-accuracy-drop needs --eval-data DIR")
            return None
        return read_eval_set(self.eval_data, input_shape)

    @property
    def max_drop(self) -> float:
        """The accuracy gate's bound in top-1 points."""
        return DEFAULT_MAX_DROP if self.max_accuracy_drop is None else self.max_accuracy_drop

    def eval_files(self) -> list[Path]:
        """The files of the labelled set (for the output clash check)."""
        if self.eval_data is None or not self.eval_data.is_dir():
            return []
        return [p for d in self.eval_data.iterdir() if d.is_dir() for p in d.iterdir()]

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """(rtol, atol), as the gates take them."""
        return self.rtol, self.atol


@dataclass(frozen=True)
class Front:
    """What the stages before emit are asked: the model, how to trace it, and into which
    form (``ca_export.rewrites.FORMS``) to rewrite it without the passes in ``skip``.

    ``decompose``: whether the trace is decomposed here (``tracing.trace``); False where
    the emitter decomposes it itself. ``other_shapes``: input shapes the run evaluates
    besides ``input_shape``, with the option that chose each (the memory guard checks
    each). The ``xnnpack`` form (ExecuTorch) traces dynamic H/W bounded, batch static.
    """

    model: str
    weights: Path | None = None
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)
    dynamic: bool = False
    rewrite: bool = True
    form: str = "onnx"
    skip: tuple[str, ...] = ()
    trust_pickle: bool = False
    check_memory: bool = True
    decompose: bool = True
    other_shapes: tuple[tuple[tuple[int, int, int, int], str], ...] = ()


@dataclass(frozen=True)
class Loaded:
    """The load stage's result: the model in eval mode, and what loading noticed."""

    front: Front
    module: nn.Module
    notices: tuple[str, ...]


@dataclass(frozen=True)
class Captured:
    """The trace stage's result."""

    loaded: Loaded
    traced: Traced


@dataclass(frozen=True)
class Found:
    """The find stage's result: the CA blocks, and the pooled concats that are not CA."""

    captured: Captured
    blocks: tuple[AtenBlock, ...]
    rejected: tuple[Rejection, ...]


@dataclass(frozen=True)
class Rewritten:
    """The rewrite stage's result: the program to emit (the trace itself when nothing was
    rewritten) and what each pass did."""

    found: Found
    program: ExportedProgram
    passes: tuple[PassResult, ...]


def load(front: Front) -> Loaded:
    """Build or unpickle the model; refuse sizes it would not fit in memory at."""
    loaded = load_model(front.model, front.weights, front.trust_pickle)
    if front.check_memory:
        shapes = [(front.input_shape, "--input-shape"), *front.other_shapes]
        for shape, option in sorted(shapes, key=lambda s: -math.prod(s[0])):
            guard_memory(loaded.module, shape, option)
    return Loaded(front, loaded.module, tuple(loaded.notices))


def capture(loaded: Loaded) -> Captured:
    """Trace the model as ``front`` asks; when a non-square size fails, name a square-only
    CA block if that is the cause."""
    front = loaded.front
    bounded = front.form == "xnnpack"
    try:
        traced = trace(loaded.module, front.input_shape, front.dynamic, bounded, front.decompose)
    except BadInputError:
        explained = _square_only(loaded.module, front.input_shape)
        if explained is None:
            raise
        raise explained from None
    return Captured(loaded, traced)


def find_blocks(captured: Captured) -> Found:
    """The CA blocks of the trace, and the pooled concats that are not CA."""
    blocks, rejected = find(captured.traced.program.graph)
    return Found(captured, tuple(blocks), tuple(rejected))


def rewrite_blocks(found: Found) -> Rewritten:
    """Rewrite a copy of the trace into ``front.form`` (static pools unless dynamic)."""
    front, traced = found.captured.loaded.front, found.captured.traced
    done = rewrite(traced.program, static=not front.dynamic, form=front.form, skip=front.skip)
    return Rewritten(found, done.program, tuple(done.passes))


@dataclass(frozen=True)
class Prepared:
    """The front of every export: the model, its trace, its blocks, the program to emit,
    and the user's gate options."""

    module: nn.Module
    traced: Traced
    blocks: list[AtenBlock]
    program: ExportedProgram
    gates: GateOptions = field(default_factory=GateOptions)
    eval_set: EvalSet | None = None
    """The labelled set of ``--eval-data``: the accuracy gate's data, and real inputs of
    the lossy gates."""

    def real_inputs(self) -> list[tuple[str, np.ndarray]]:
        """Samples of the labelled set for the lossy agreement gates (none without one)."""
        return [] if self.eval_set is None else self.eval_set.picks()

    @property
    def square_only(self) -> bool:
        """Whether the model runs on square inputs only (by its trace or a block's quirk)."""
        return self.traced.square_only or any(b.square_only for b in self.blocks)

    @property
    def rewritten(self) -> bool:
        """Whether ``program`` is the rewritten one."""
        return self.program is not self.traced.program


def prepare(
    front: Front,
    stage: Stages,
    report: ExportReport,
    gates: GateOptions = GateOptions(),
    eval_set: EvalSet | None = None,
) -> Prepared:
    """Run load -> trace -> find -> rewrite, each stage once, and record each result in
    ``report``; a model without CA blocks, or a front that asks for none, is not rewritten.
    ``gates`` and the labelled set ``eval_set`` are handed on to the later stages."""
    with stage("load"):
        loaded = load(front)
        report.notices += loaded.notices
    with stage("trace"):
        captured = capture(loaded)
        report.notices += captured.traced.notices
    with stage("detect"):
        found = find_blocks(captured)
        report.rejected = list(found.rejected)
        report.ca_blocks = [BlockReport.of(b) for b in found.blocks]
        for entry, block in zip(report.ca_blocks, found.blocks, strict=True):
            entry.ca_only_nodes_before = block.ca_only_nodes()
    program = captured.traced.program
    if front.rewrite and found.blocks:
        with stage("rewrite"):
            rewritten = rewrite_blocks(found)
            program = rewritten.program
            report.passes = list(rewritten.passes)
            for entry in report.ca_blocks:
                entry.rewritten = any(entry.id in p.applied for p in rewritten.passes)
    blocks = list(found.blocks)
    return Prepared(loaded.module, captured.traced, blocks, program, gates, eval_set)


def inspect_model(
    model: str,
    weights: Path | None = None,
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224),
    progress: Progress = quiet,
    trust_pickle: bool = False,
    check_memory: bool = True,
    target: str = DEFAULT_TARGET,
) -> InspectReport:
    """Trace a model and report its CA blocks, the pooled concats that are not CA, and what
    each rewrite pass of ``target``'s form would do to each block."""
    form = form_of(target)
    front = Front(
        model,
        weights,
        input_shape,
        form=form,
        trust_pickle=trust_pickle,
        check_memory=check_memory,
        decompose=False,
    )
    stage = Stages(progress)
    with stage("load"):
        loaded = load(front)
    with stage("trace"):
        captured = capture(loaded)
    with stage("detect"):
        found = find_blocks(captured)
    passes: tuple[PassResult, ...] = ()
    if found.blocks:
        with stage("rewrite"):
            passes = rewrite_blocks(found).passes
    notices = [*loaded.notices, *captured.traced.notices]
    if found.blocks:
        notices.append(ncnn.STOCK_DANGER)
    entries = [BlockReport.of(b) for b in found.blocks]
    return InspectReport(
        model, list(input_shape), entries, list(found.rejected), notices, list(passes)
    )


@dataclass
class ModelJob(ABC):
    """What every export job shares: the model, the output, and how it is traced.

    A target is a subclass that declares its own options and ``writes``, and implements
    ``run``: ``prepare`` (load -> trace -> find -> rewrite), then its own emit, gates and
    write (see docs/design.md, "Adding a target").
    """

    model: str
    output: Path
    weights: Path | None = None
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)
    dynamic: bool = False
    rewrite: bool = True
    trust_pickle: bool = False
    check_memory: bool = True
    skip_passes: tuple[str, ...] = ()
    gates: GateOptions = field(default_factory=GateOptions)
    decompose: ClassVar[bool] = True
    """Whether the trace is decomposed here (``tracing.trace``); False where the emitter
    decomposes it itself."""

    def reads(self) -> list[Path]:
        """The files this job reads."""
        return model_files(self.model, self.weights) + self.gates.eval_files()

    @abstractmethod
    def writes(self) -> list[Output]:
        """The files this job writes."""

    @abstractmethod
    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline; the report says whether every gate passed."""

    def other_shapes(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """Input shapes the run evaluates besides ``input_shape`` that the user chose, with
        the option that chose them (the memory guard checks each)."""
        return []

    def front(self, form: str = "onnx") -> Front:
        """What this job asks of the stages before emit, rewriting into ``form``."""
        return Front(
            model=self.model,
            weights=self.weights,
            input_shape=self.input_shape,
            dynamic=self.dynamic,
            rewrite=self.rewrite,
            form=form,
            skip=self.skip_passes,
            trust_pickle=self.trust_pickle,
            check_memory=self.check_memory,
            decompose=self.decompose,
            other_shapes=tuple(self.other_shapes()),
        )

    def prepare(self, stage: Stages, report: ExportReport, form: str = "onnx") -> Prepared:
        """Read the labelled set, if any (bad input before any work); load, trace, find
        blocks and rewrite them into ``form``, as this job asks."""
        eval_set = self.gates.eval_set(self.input_shape)
        return prepare(self.front(form), stage, report, self.gates, eval_set)


def with_block_gate(
    prepared: Prepared,
    gate: GateResult,
    inputs: list[tuple[int, torch.Tensor]],
    runtime: GateResult | None = None,
) -> Check:
    """The parity check: the artifact gate, for a rewritten program each block's own gate
    in PyTorch, and the ``runtime`` gate of each block inside the artifact where one ran.

    The block gates take the first input of each size (``one_per_size``), while the
    artifact gate takes them all.
    """
    blocks = None
    passed = gate.passed and (runtime is None or runtime.passed)
    per_size = one_per_size(inputs)
    if prepared.rewritten:
        pairs = [(b.module, b.source.name, b.output.name) for b in prepared.blocks]
        per_block = block_gate(prepared.traced.program, prepared.program, pairs, per_size)
        blocks = GateFigures.of(per_block, len(per_size))
        passed = passed and per_block.passed
    inside = None if runtime is None else GateFigures.of(runtime, len(per_size))
    figures = GateFigures.of(gate, len(inputs), blocks, runtime_blocks=inside)
    return Check.judged("parity", passed, figures)
