"""The ncnn size-safe head passes (``grid_from_map``, ``fill_from_map``,
``reshape_minus_one``) on a toy anchor-free head: each rewrites what it matches, exactly
at every size, and leaves its negative twin alone with the reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ca_export.export import ncnn
from ca_export.rewrites.fill_from_map import fill_from_map
from ca_export.rewrites.grid_from_map import grid_from_map
from ca_export.rewrites.reshape_minus_one import reshape_minus_one
from ca_export.tracing import Traced, example_input, trace

SHAPE = (1, 3, 16, 16)
SIZES = ((16, 16), (24, 32), (32, 8))
aten = torch.ops.aten


class Head(nn.Module):
    """A conv and a YOLOv8-style decode: anchor grid, stride fill, flattening views."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(x)
        b, _, h, w = r.shape
        ys = torch.arange(h, dtype=r.dtype) + 0.5
        xs = torch.arange(w, dtype=r.dtype) * 1.0 + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        anchors = torch.stack((grid_x, grid_y)).view(2, h * w)
        strides = torch.full((1, h * w), 8.0, dtype=r.dtype)
        dist, logits = r.view(b, 6, h * w).split((4, 2), dim=1)
        left_top, right_bottom = dist.view(b, 2, 2, -1).unbind(1)
        boxes = torch.cat((anchors - left_top, anchors + right_bottom), dim=1) * strides
        return torch.cat((boxes, logits.sigmoid()), dim=1)


class Unmatched(nn.Module):
    """What the passes must leave alone: a grid of integer indices, a grid one longer than
    the map, a fill two rows high, a view holding both H and W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        longer = torch.arange(h + 1, dtype=x.dtype)
        gl, _ = torch.meshgrid(longer, torch.arange(w, dtype=x.dtype), indexing="ij")
        fill = torch.full((2, h * w), 2.0, dtype=x.dtype)
        rows = x.view(b, c * h, w).sum() + gl.sum()
        return x + gx + gy + fill.view(2, h, w)[:1].unsqueeze(0) + rows


@pytest.fixture(scope="module")
def head() -> tuple[Head, Traced]:
    torch.manual_seed(0)
    model = Head().eval()
    return model, trace(model, SHAPE, dynamic=True)


def _targets(traced: Traced) -> set[object]:
    return {n.target for n in traced.program.graph.nodes}


def test_the_passes_rewrite_the_head_exactly_at_every_size(head: tuple[Head, Traced]) -> None:
    model, traced = head
    program = traced.program
    assert ncnn.pinned_ops(program, second=True)  # arange and full take the map's size
    grid, fill, views = grid_from_map(program), fill_from_map(program), reshape_minus_one(program)
    assert len(grid.applied) == 1 and len(fill.applied) == 1 and len(views.applied) == 2
    targets = _targets(traced)
    assert aten.arange.default not in targets and aten.full.default not in targets
    assert aten.meshgrid.indexing not in targets and aten.cumsum.default in targets
    assert ncnn.pinned_ops(program, second=True) == []
    # Without a second shape pnnx resolves the views' -1 at the traced size.
    assert all(line.startswith("aten.view") for line in ncnn.pinned_ops(program))
    rewritten = program.module()
    for size in SIZES:
        x = example_input((1, 3, *size))
        with torch.no_grad():
            assert torch.equal(rewritten(x)[0], model(x)), size


def test_what_does_not_match_is_left_alone_with_the_reason() -> None:
    traced = trace(Unmatched(), SHAPE, dynamic=True)
    before = [n.target for n in traced.program.graph.nodes]
    grid, fill, views = (
        p(traced.program) for p in (grid_from_map, fill_from_map, reshape_minus_one)
    )
    assert not grid.applied and not fill.applied and not views.applied
    assert sorted(grid.skipped.values()) == [
        "arange is not a float arange",
        "no feature map of the grid's sizes and dtype",
    ]
    assert list(fill.skipped.values()) == ["not a fill of one symbolic size"]
    assert [v.startswith("2 sizes from H or W") for v in views.skipped.values()] == [True, True]
    assert [n.target for n in traced.program.graph.nodes] == before
    assert ncnn.pinned_ops(traced.program, second=True)


@pytest.mark.slow
def test_the_rewritten_head_converts_size_safe_in_ncnn(tmp_path: object) -> None:
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    from pathlib import Path

    from ca_export.verify.ncnn_runtime import NcnnRunner

    model = Head().eval()
    traced = trace(model, SHAPE, dynamic=True)
    for rewrite in (grid_from_map, fill_from_map, reshape_minus_one):
        rewrite(traced.program)
    converted = ncnn.convert(traced.program.module(), example_input(SHAPE), second=(1, 3, 32, 48))
    assert not ncnn.baked_sizes(ncnn.parse_param(converted.param))
    param, weights = ncnn.files_of(Path(str(tmp_path)) / "head")
    param.write_text(converted.param)
    weights.write_bytes(converted.weights)
    runner = NcnnRunner(param, weights)
    for size in SIZES:
        x = example_input((1, 3, *size))
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(runner.run(x.numpy())[0]).reshape(want.shape)
        assert torch.allclose(got, want, rtol=0, atol=1e-4), size
