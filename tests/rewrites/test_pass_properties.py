"""Properties every pass keeps, over every form: the graph stays topologically ordered and
each rewritten block stays exact, checked after each pass, not only after the last one.

Each target's form runs its passes one at a time on a copy of the trace (every positive
ca_zoo case and the cheap samples); after each pass the ATen graph must list every node
after the nodes it reads (``torch.fx`` runs nodes in list order, so a node placed before
its input fails only when the program runs, far from the pass that misplaced it), and
``block_gate`` must find every block exact on its original input. The order of every
form on every static zoo trace is checked in the fast suite (passes take milliseconds),
and exactness after each pass of the default target's form on two cases; exactness after
each pass of every form, dynamic traces and the samples run with ``-m slow``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from ca_zoo import POSITIVE, seeded_input
from torch.export import ExportedProgram

from ca_export.patterns import find
from ca_export.patterns.aten import AtenView
from ca_export.rewrites import DEFAULT_TARGET, FORMS, form_of, passes_for, rewrite
from ca_export.rewrites.passes import run
from ca_export.tracing import Traced, trace
from ca_export.verify.parity import block_gate
from sample_models import build

ZooTrace = Callable[..., Traced]
SAMPLES = {"seed_ca": (1, 3, 32, 32), "ca_segnet": (1, 3, 64, 64)}
"""The cheap samples (the ones ``test_export_samples`` runs in the fast suite)."""


def unordered(graph: torch.fx.Graph) -> list[str]:
    """Each node that reads a node listed after it, as ``'user' reads 'input'``."""
    seen: set[torch.fx.Node] = set()
    found = []
    for node in graph.nodes:
        found += [f"'{node.name}' reads '{a.name}'" for a in node.all_input_nodes if a not in seen]
        seen.add(node)
    return found


def check_passes_one_by_one(
    traced: Traced, form: str, static: bool, exact: bool = True
) -> list[str]:
    """Run ``form``'s passes one at a time on a copy of ``traced``; after each, check order
    and (if ``exact``) block exactness. Returns the passes that changed the graph."""
    original: ExportedProgram = traced.program
    program = rewrite(original, static, form, skip=FORMS[form]).program  # an untouched copy
    view = AtenView(program.graph)
    blocks, _ = find(view)
    assert blocks, "no CA block found"
    inputs = [(seed, seeded_input(tuple(traced.example.shape), seed)) for seed in (1, 2)]
    applied = []
    for p in passes_for(form):
        (result,), blocks = run(view, blocks, [p], static)
        if result.modified:
            applied.append(p.name)
        assert unordered(program.graph) == [], f"after {p.name} ({form})"
        if not exact:
            continue
        pairs = [(b.module, b.source.name, b.output.name) for b in blocks]
        gate = block_gate(original, program, pairs, inputs)
        assert gate.passed, f"after {p.name} ({form}): {gate.failures()}"
    return applied


def test_unordered_names_a_node_placed_before_its_input(zoo_trace: ZooTrace) -> None:
    """The order check itself: a node moved ahead of its input is named; its twin (the
    trace as made) is clean."""
    program = rewrite(zoo_trace("official").program, True, skip=FORMS["onnx"]).program
    graph = program.graph
    assert unordered(graph) == []
    conv = next(n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default)
    first = next(iter(graph.nodes))
    first.prepend(conv)
    assert unordered(graph) != []


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_every_pass_keeps_order(case, zoo_trace: ZooTrace) -> None:
    for form in FORMS:
        check_passes_one_by_one(zoo_trace(case.name), form, static=True, exact=False)


@pytest.mark.parametrize("name", ["inline_sandglass", "official"])
def test_default_form_is_exact_after_each_pass(name: str, zoo_trace: ZooTrace) -> None:
    """The default target's form; the sandglass (the case that broke graph order) is really
    padded (mip 8 -> 16), not skipped."""
    applied = check_passes_one_by_one(zoo_trace(name), form_of(DEFAULT_TARGET), True)
    assert "pad_mip" in applied


@pytest.mark.slow
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_every_pass_keeps_order_and_exactness_static(case, form: str, zoo_trace: ZooTrace) -> None:
    check_passes_one_by_one(zoo_trace(case.name), form, static=True)


@pytest.mark.slow
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("case", [c for c in POSITIVE if c.name != "seed"], ids=lambda c: c.name)
def test_every_pass_keeps_order_and_exactness_dynamic(case, form: str, zoo_trace: ZooTrace) -> None:
    check_passes_one_by_one(zoo_trace(case.name, True), form, static=False)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_pass_keeps_order_and_exactness_on_samples(
    name: str, form: str, dynamic: bool
) -> None:
    traced = _sample_trace(name, dynamic)
    check_passes_one_by_one(traced, form, static=not dynamic)


_TRACES: dict[tuple[str, bool], Traced] = {}


def _sample_trace(name: str, dynamic: bool) -> Traced:
    if (name, dynamic) not in _TRACES:
        _TRACES[(name, dynamic)] = trace(build(name), SAMPLES[name], dynamic)
    return _TRACES[(name, dynamic)]
