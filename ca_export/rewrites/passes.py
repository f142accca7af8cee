"""Rewrites as passes: each one runs on every block and says what it changed or why not.

In the style of onnx_ir's ``PassResult`` and pass manager: a rewrite is a function of one
block that returns a ``Change`` (a line saying what it did, and the block as it stands
after), or raises ``Skip`` with the reason it left the block as it was (already in that
form, a size that is not static, an op the opset lacks). A rewrite never edits the block
it is handed: where it replaces an op the block names, it returns a copy naming the new
one, and ``run`` hands that copy to the later passes. ``run`` applies the passes in their
declared order, every block each, and returns one ``PassResult`` per pass; the report and
``inspect`` read them. A pass that fails with anything else is named, with the passes
that ran before it. A ``GraphPass`` rewrites ops outside CA blocks (``size_to_scale``):
it runs once on the whole view and returns its ``PassResult``, keyed by op name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT


@dataclass(frozen=True)
class Change(Generic[OpT, ValueT]):
    """What a rewrite did to one block, and the block as the graph now holds it."""

    summary: str
    block: CABlock[OpT, ValueT]


class Rewrite(Protocol):
    """A rewrite of one block, generic over the view it is given."""

    def __call__(
        self, view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool, /
    ) -> Change[OpT, ValueT]:
        """``(view, block, static) -> what it did``; raises ``Skip`` to leave the block
        alone."""
        ...


class ViewRewrite(Protocol):
    """A rewrite of the whole view (``GraphPass``), generic over the view."""

    def __call__(self, view: GraphView[OpT, ValueT], static: bool, /) -> PassResult:
        """``(view, static) -> what it did``."""
        ...


EXECUTORCH_ONLY = "the ExecuTorch form rewrites ATen graphs only"
"""Why an ExecuTorch-only pass skips a view without its optional edits."""


class Skip(Exception):
    """A rewrite leaves a block as it is; the message says why."""


class PassError(RuntimeError):
    """A rewrite failed unexpectedly; the message names it and the passes before it."""


@dataclass(frozen=True)
class Pass:
    """A named rewrite with a one-line summary for ``--help`` and the report."""

    name: str
    rewrite: Rewrite
    summary: str


@dataclass
class PassResult:
    """What one pass did: per block (by ``CABlock.id``; per op for a ``GraphPass``), the
    change made or the reason it was skipped, and the figures behind a change that a later
    stage reads."""

    name: str
    applied: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the pass changed the graph."""
        return bool(self.applied)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"name": self.name, "applied": self.applied, "skipped": self.skipped}


@dataclass(frozen=True)
class GraphPass:
    """A named rewrite of the whole view, for ops outside CA blocks."""

    name: str
    rewrite: ViewRewrite
    summary: str


def run(
    view: GraphView[OpT, ValueT],
    blocks: Sequence[CABlock[OpT, ValueT]],
    passes: Sequence[Pass | GraphPass],
    static: bool,
) -> tuple[list[PassResult], list[CABlock[OpT, ValueT]]]:
    """Apply ``passes`` in order to every block (a ``GraphPass`` once to the view); the view
    is edited in place, ``blocks`` are not. Returns each pass's result and the blocks as the
    last pass left them."""
    results: list[PassResult] = []
    current = list(blocks)
    for p in passes:
        if isinstance(p, GraphPass):
            try:
                results.append(p.rewrite(view, static))
            except Exception as err:
                ran = ", ".join(r.name for r in results) or "none"
                raise PassError(f"rewrite '{p.name}' failed (after: {ran}): {err}") from err
            continue
        result = PassResult(p.name)
        for i, block in enumerate(current):
            try:
                change = p.rewrite(view, block, static)
                result.applied[block.id] = change.summary
                current[i] = change.block
            except Skip as why:
                result.skipped[block.id] = str(why)
            except Exception as err:
                ran = ", ".join(r.name for r in results) or "none"
                raise PassError(
                    f"rewrite '{p.name}' failed on block '{block.id}' (after: {ran}): {err}"
                ) from err
        results.append(result)
    return results, current
