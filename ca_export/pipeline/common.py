"""Stages every export shares: load -> trace -> find blocks -> rewrite, timed and announced."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.loading import load_model
from ca_export.patterns import CABlock, find
from ca_export.report import BlockReport, ExportReport, InspectReport, gate_summary
from ca_export.rewrites import rewrite
from ca_export.tracing import Traced, trace
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
        self.progress(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)


def inspect_model(
    model: str,
    weights: Path | None = None,
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224),
    progress: Progress = quiet,
) -> InspectReport:
    """Trace a model and report its CA blocks and the pooled concats that are not CA."""
    stage = Stages(progress)
    with stage("load"):
        loaded = load_model(model, weights)
    with stage("trace"):
        traced = trace(loaded.module, input_shape, dynamic=False)
    with stage("detect"):
        blocks, rejected = find(traced.program.graph)
    return InspectReport(
        model, list(input_shape), [BlockReport.of(b) for b in blocks], rejected, loaded.notices
    )


def check_writable(path: Path) -> None:
    """Fail early, before any heavy work, if ``path`` cannot be written."""
    parent = path.resolve().parent
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a directory")
    if not parent.is_dir():
        raise BadInputError(f"output folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"output folder {str(parent)!r} is not writable")


@dataclass
class Prepared:
    """The front of every export: the model, its trace, its blocks, the program to emit."""

    module: nn.Module
    traced: Traced
    blocks: list[CABlock]
    program: ExportedProgram

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
    form: str = "onnx",
) -> Prepared:
    """Load, trace, find blocks and (if asked) rewrite them into ``form``; fill the report."""
    with stage("load"):
        loaded = load_model(model, weights)
        report.notices += loaded.notices
    with stage("trace"):
        traced = trace(loaded.module, input_shape, dynamic)
    with stage("detect"):
        blocks, report.rejected = find(traced.program.graph)
        report.ca_blocks = [BlockReport.of(b) for b in blocks]
    program = traced.program
    if do_rewrite and blocks:
        with stage("rewrite"):
            program = rewrite(traced.program, static=not dynamic, form=form).program
            for entry in report.ca_blocks:
                entry.rewritten = True
    return Prepared(loaded.module, traced, blocks, program)


def with_block_gate(
    prepared: Prepared, gate: GateResult, inputs: list[tuple[int, torch.Tensor]]
) -> dict[str, Any]:
    """The artifact gate's summary, and, for a rewritten program, each block's own gate."""
    parity = gate_summary(gate) | {"inputs": len(inputs)}
    if prepared.rewritten:
        pairs = [(b.module, b.source.name, b.output.name) for b in prepared.blocks]
        blocks = block_gate(prepared.traced.program, prepared.program, pairs, inputs)
        parity["blocks"] = gate_summary(blocks)
        parity["passed"] = gate.passed and blocks.passed
    return parity


def write_atomic(data: bytes, path: Path) -> dict[str, object]:
    """Write atomically: a temporary file in the same folder, then a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


PROTOBUF_LIMIT = 2**31 - 2**24
"""Largest ONNX file written as one protobuf (protobuf caps at 2 GiB; 16 MiB headroom)."""


def write_onnx(
    model: onnx.ModelProto, path: Path, limit: int = PROTOBUF_LIMIT
) -> dict[str, object]:
    """Write an ONNX model atomically; past ``limit`` its tensors go to ``<path>.data``."""
    if model.ByteSize() < limit:
        return write_atomic(model.SerializeToString(), path)
    folder = path.resolve().parent
    data_name = f"{path.name}.data"
    try:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=folder) as tmp:
            staged = Path(tmp) / path.name
            onnx.save_model(
                model,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            os.replace(Path(tmp) / data_name, folder / data_name)
            os.replace(staged, path)
    except OSError as err:
        raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size + (folder / data_name).stat().st_size
    return {"path": str(path), "bytes": size, "sha256": digest, "external_data": data_name}
