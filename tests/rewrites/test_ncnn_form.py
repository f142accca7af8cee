"""The ncnn rewrite form's own pass, ``stem_before_pool``: exact at several sizes, with twins."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from ca_zoo import NEGATIVE, POSITIVE, OfficialCA, ZooCase, _case, _h_swish, _net, seeded_input
from conftest import assert_within, comparisons
from torch.export import ExportedProgram

from ca_export.rewrites import rewrite
from ca_export.tracing import trace

aten = torch.ops.aten
SIZES = ((1, 3, 16, 24), (1, 3, 24, 16), (1, 3, 32, 32))
"""The traced size and two others, one of them the other way round."""


def _positive(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def _ncnn_form(case: ZooCase, dynamic: bool = True) -> tuple[torch.nn.Module, ExportedProgram]:
    model = case.build()
    before = trace(model, case.input_shape, dynamic=dynamic).program
    return model, rewrite(before, static=not dynamic, form="ncnn").program


def _means(program: ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.target == aten.mean.dim]


class ReluFirstCA(OfficialCA):
    """Official CA whose stem starts with a ReLU: nothing affine to move before the pools."""

    def _shared(self, y: torch.Tensor) -> torch.Tensor:
        return _h_swish(self.bn1(self.conv1(F.relu(y))))


@pytest.fixture(scope="module")
def official() -> tuple[torch.nn.Module, ExportedProgram]:
    """The official block in the ncnn form, from a dynamic trace."""
    return _ncnn_form(_positive("official"))


def _stem_means_exact(case: ZooCase, model: torch.nn.Module, after: ExportedProgram) -> None:
    """Both means of each block read a 1x1 conv with ``mip`` outputs; exact at ``SIZES``."""
    means = _means(after)
    assert len(means) == 2 * len(case.channels)
    for mean in means:
        source = mean.args[0]
        while source.target not in (aten.conv2d.default, aten.convolution.default):
            source = source.args[0]
        assert source.args[1].meta["val"].shape[0] in case.mip
    assert not rewrite(after, static=False, form="ncnn").modified
    for i, shape in enumerate(SIZES):
        x = seeded_input(shape, i)
        assert_within((model(x),), after.module()(x))


def test_both_strip_means_read_the_stem_output_and_stay_exact_at_every_size(
    official: tuple[torch.nn.Module, ExportedProgram],
) -> None:
    _stem_means_exact(_positive("official"), *official)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timm", "two_blocks"])
def test_other_blocks_read_the_stem_output_too(name: str) -> None:
    case = _positive(name)
    _stem_means_exact(case, *_ncnn_form(case))


def test_a_mean_over_the_wrong_axis_is_caught_by_the_same_comparison(
    official: tuple[torch.nn.Module, ExportedProgram],
) -> None:
    model, after = official[0], copy.deepcopy(official[1])
    first, second = _means(after)
    axes = first.args[1], second.args[1]
    first.args, second.args = (first.args[0], axes[1], True), (second.args[0], axes[0], True)
    after.graph_module.recompile()
    x = seeded_input((1, 3, 16, 16), 3)
    assert not any(c.passed for c in comparisons((model(x),), after.module()(x)))


def test_a_stem_that_starts_with_an_activation_keeps_its_pools_on_x() -> None:
    case = _case("relu_first", lambda: _net(32, ReluFirstCA(32, 8)), seed=1, note="", mip=(8,))
    model = case.build()
    result = rewrite(trace(model, case.input_shape, dynamic=True).program, False, "ncnn")
    (skipped,) = next(p for p in result.passes if p.name == "stem_before_pool").skipped.values()
    assert "does not start with a 1x1 conv or batch norm" in skipped
    pooled = {mean.args[0] for mean in _means(result.program)}
    assert all(n.target not in (aten.conv2d.default, aten.convolution.default) for n in pooled)
    x = seeded_input((1, 3, 24, 16), 2)
    assert_within((model(x),), result.program.module()(x))


def test_a_static_trace_keeps_its_average_pools_on_x() -> None:
    program = trace(_positive("official").build(), (1, 3, 16, 24), False).program
    result = rewrite(program, True, "ncnn")
    (skipped,) = next(p for p in result.passes if p.name == "stem_before_pool").skipped.values()
    assert skipped.startswith("static sizes")
    assert not _means(result.program)


@pytest.mark.slow
@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_look_alikes_are_left_alone_by_the_ncnn_form(case: ZooCase) -> None:
    program = trace(case.build(), case.input_shape, dynamic=True).program
    assert not rewrite(program, static=False, form="ncnn").modified
