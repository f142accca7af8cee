"""Stages every export shares: load -> trace -> find blocks -> rewrite, timed and announced."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export import interrupts
from ca_export.errors import BadInputError, CAExportError, StageError
from ca_export.export import ncnn
from ca_export.loading import load_model, model_files
from ca_export.patterns import CABlock, find
from ca_export.report import BlockReport, Check, ExportReport, InspectReport, gate_summary
from ca_export.rewrites import DEFAULT_TARGET, form_of, rewrite
from ca_export.tracing import Traced, guard_memory, trace
from ca_export.verify.parity import GateResult, block_gate

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


def trace_or_explain(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dynamic: bool,
    bounded: bool = False,
    decompose: bool = True,
) -> Traced:
    """Trace; when a non-square size fails, name a square-only CA block if that is the cause."""
    try:
        return trace(model, input_shape, dynamic, bounded, decompose)
    except BadInputError:
        n, c, h, w = input_shape
        if h == w:
            raise
        square = trace(model, (n, c, h, h), dynamic=False)
        quirky = [b.module for b in find(square.program.graph)[0] if b.square_only]
        if not quirky:
            raise
        raise BadInputError(
            f"{', '.join(quirky)}: a CA gate is applied along the other spatial axis (no "
            f"transpose back after the split), so the model runs on square inputs only, "
            f"not {h}x{w}; use a square --input-shape"
        ) from None


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
    stage = Stages(progress)
    with stage("load"):
        loaded = load_model(model, weights, trust_pickle)
        if check_memory:
            guard_memory(loaded.module, input_shape)
    with stage("trace"):
        traced = trace_or_explain(loaded.module, input_shape, dynamic=False, decompose=False)
    with stage("detect"):
        blocks, rejected = find(traced.program.graph)
    passes = []
    if blocks:
        with stage("rewrite"):
            result = rewrite(traced.program, static=True, form=form_of(target))
            passes = [p.to_dict() for p in result.passes]
    notices = loaded.notices + traced.notices + ([ncnn.STOCK_DANGER] if blocks else [])
    entries = [BlockReport.of(b) for b in blocks]
    return InspectReport(model, list(input_shape), entries, rejected, notices, passes)


@dataclass(frozen=True)
class GateOptions:
    """What the user set of the gates: ``--rtol`` and ``--atol`` (see
    ``verify.tolerances.user_tolerance``) and ``--allow-unverified``."""

    rtol: float | None = None
    atol: float | None = None
    allow_unverified: bool = False

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """(rtol, atol), as the gates take them."""
        return self.rtol, self.atol


@dataclass
class ModelJob:
    """What every export job shares: the model, the output, and how it is traced."""

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
        return model_files(self.model, self.weights)

    def other_shapes(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """Input shapes the run evaluates besides ``input_shape`` that the user chose, with
        the option that chose them (the memory guard checks each)."""
        return []

    def prepare(self, stage: Stages, report: ExportReport, form: str = "onnx") -> Prepared:
        """Load, trace, find blocks and rewrite them into ``form``, as this job asks."""
        prepared = prepare(
            self.model,
            self.weights,
            self.input_shape,
            self.dynamic,
            self.rewrite,
            stage,
            report,
            self.trust_pickle,
            self.check_memory,
            form,
            self.skip_passes,
            self.decompose,
            self.other_shapes(),
        )
        prepared.gates = self.gates
        return prepared


@dataclass
class Prepared:
    """The front of every export: the model, its trace, its blocks, the program to emit,
    and the user's gate options."""

    module: nn.Module
    traced: Traced
    blocks: list[CABlock]
    program: ExportedProgram
    gates: GateOptions = field(default_factory=GateOptions)

    @property
    def square_only(self) -> bool:
        """Whether the model runs on square inputs only (by its trace or a block's quirk)."""
        return self.traced.square_only or any(b.square_only for b in self.blocks)

    @property
    def rewritten(self) -> bool:
        """Whether ``program`` is the rewritten one."""
        return self.program is not self.traced.program


def prepare(
    model: str,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    dynamic: bool,
    do_rewrite: bool,
    stage: Stages,
    report: ExportReport,
    trust_pickle: bool = False,
    check_memory: bool = True,
    form: str = "onnx",
    skip: Sequence[str] = (),
    decompose: bool = True,
    other_shapes: Sequence[tuple[tuple[int, int, int, int], str]] = (),
) -> Prepared:
    """Load, trace, find blocks and (if asked) rewrite them into ``form`` without the passes
    named in ``skip``; fill the report with what each pass did. The ``xnnpack`` form
    (ExecuTorch) traces dynamic H/W bounded, with a static batch."""
    with stage("load"):
        loaded = load_model(model, weights, trust_pickle)
        report.notices += loaded.notices
        if check_memory:
            shapes = [(input_shape, "--input-shape"), *other_shapes]
            for shape, option in sorted(shapes, key=lambda s: -math.prod(s[0])):
                guard_memory(loaded.module, shape, option)
    with stage("trace"):
        bounded = form == "xnnpack"
        traced = trace_or_explain(loaded.module, input_shape, dynamic, bounded, decompose)
        report.notices += traced.notices
    with stage("detect"):
        blocks, report.rejected = find(traced.program.graph)
        report.ca_blocks = [BlockReport.of(b) for b in blocks]
        for entry, block in zip(report.ca_blocks, blocks, strict=True):
            entry.ca_only_nodes_before = block.ca_only_nodes()
    program = traced.program
    if do_rewrite and blocks:
        with stage("rewrite"):
            result = rewrite(traced.program, static=not dynamic, form=form, skip=skip)
            program = result.program
            report.passes = [p.to_dict() for p in result.passes]
            for entry in report.ca_blocks:
                entry.rewritten = any(entry.id in p.applied for p in result.passes)
    return Prepared(loaded.module, traced, blocks, program)


def with_block_gate(
    prepared: Prepared, gate: GateResult, inputs: list[tuple[int, torch.Tensor]]
) -> Check:
    """The parity check: the artifact gate, and, for a rewritten program, each block's own gate.

    The block gate runs both whole programs per input; it takes the first input of each
    size (a block's rewrite is exact or wrong at a size whatever the seed), while the
    artifact gate takes them all.
    """
    parity = gate_summary(gate) | {"inputs": len(inputs)}
    passed = gate.passed
    if prepared.rewritten:
        pairs = [(b.module, b.source.name, b.output.name) for b in prepared.blocks]
        sizes: dict[tuple[int, ...], tuple[int, torch.Tensor]] = {}
        for seed, x in inputs:
            sizes.setdefault(tuple(x.shape), (seed, x))
        per_size = list(sizes.values())
        blocks = block_gate(prepared.traced.program, prepared.program, pairs, per_size)
        parity["blocks"] = gate_summary(blocks) | {"inputs": len(per_size)}
        passed = gate.passed and blocks.passed
    return Check.judged("parity", passed, parity)
