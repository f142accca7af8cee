"""The ncnn size-safe head passes (``grid_from_map``, ``fill_from_map``, ``split_view``,
``broadcast_expand``, ``reshape_minus_one``) on a toy anchor-free head and a toy
anchor-based one: each rewrites what it matches, exactly at every size, and leaves its
negative twin alone with the reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ca_export.export import ncnn
from ca_export.pipeline.ncnn import HEAD_PASSES
from ca_export.rewrites.broadcast_expand import broadcast_expand
from ca_export.rewrites.fill_from_map import fill_from_map
from ca_export.rewrites.grid_from_map import grid_from_map
from ca_export.rewrites.reshape_minus_one import reshape_minus_one
from ca_export.rewrites.split_view import split_view
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


class AnchorHead(nn.Module):
    """A conv and a YOLOv5-style decode: channels split per anchor by a 5-D view, a cell
    grid stacked along the last axis and expanded, anchor sizes expanded, a flattening
    view."""

    na, no = 3, 6

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.na * self.no, 3, 2, 1)
        self.register_buffer("anchors", torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(x)
        bs, _, ny, nx = r.shape
        r = r.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
        ys, xs = (torch.arange(n, dtype=r.dtype) for n in (ny, nx))
        yv, xv = torch.meshgrid(ys, xs, indexing="ij")
        shape = (1, self.na, ny, nx, 2)
        grid = torch.stack((xv, yv), 2).expand(shape)
        anchor_grid = (self.anchors * 8).view(1, self.na, 1, 1, 2).expand(shape)
        xy, wh, conf = r.sigmoid().split((2, 2, self.no - 4), 4)
        xy = (xy * 2 - 0.5 + grid) * 8
        wh = (wh * 2) ** 2 * anchor_grid
        return torch.cat((xy, wh, conf), 4).view(bs, self.na * ny * nx, self.no)


class Unmatched(nn.Module):
    """What the passes must leave alone: a grid of integer indices, a grid one longer than
    the map, a fill two rows high, a view holding both H and W that splits no channels,
    an expand read by a ``cat`` and one whose reader's other operand is one channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        longer = torch.arange(h + 1, dtype=x.dtype)
        gl, _ = torch.meshgrid(longer, torch.arange(w, dtype=x.dtype), indexing="ij")
        fill = torch.full((2, h * w), 2.0, dtype=x.dtype)
        rows = x.view(b, c * h, w).sum() + gl.sum()
        mean = x.mean(1, keepdim=True)
        joined = torch.cat((mean.expand(b, c, h, w), x), 1).sum()
        narrow = x[:, :1] * mean.expand(b, c, h, w)
        return x + gx + gy + fill.view(2, h, w)[:1].unsqueeze(0) + rows + joined + narrow


@pytest.fixture(scope="module")
def head() -> tuple[Head, Traced]:
    torch.manual_seed(0)
    model = Head().eval()
    return model, trace(model, SHAPE, dynamic=True)


def _targets(traced: Traced) -> set[object]:
    return {n.target for n in traced.program.graph.nodes}


def assert_same_at_every_size(program: torch.export.ExportedProgram, model: nn.Module) -> None:
    """The rewritten program's output is bit for bit the model's at each of ``SIZES``."""
    rewritten = program.module()
    for size in SIZES:
        x = example_input((1, 3, *size))
        with torch.no_grad():
            assert torch.equal(rewritten(x)[0], model(x)), size


def _held(program: torch.export.ExportedProgram) -> list[str]:
    """The pinned ops a second input shape does not free."""
    return [p.op for p in ncnn.pinned_ops(program) if not p.by_shape]


def test_the_passes_rewrite_the_head_exactly_at_every_size(head: tuple[Head, Traced]) -> None:
    model, traced = head
    program = traced.program
    assert _held(program)  # arange and full take the map's size
    grid, fill, views = grid_from_map(program), fill_from_map(program), reshape_minus_one(program)
    assert len(grid.applied) == 1 and len(fill.applied) == 1 and len(views.applied) == 2
    targets = _targets(traced)
    assert aten.arange.default not in targets and aten.full.default not in targets
    assert aten.meshgrid.indexing not in targets and aten.cumsum.default in targets
    assert _held(program) == []
    # Without a second shape pnnx resolves the views' -1 at the traced size.
    pinned = ncnn.pinned_ops(program)
    assert pinned and all(p.by_shape and p.op.startswith("aten.view") for p in pinned)
    assert_same_at_every_size(program, model)


def test_the_passes_rewrite_the_anchor_head_exactly_at_every_size() -> None:
    torch.manual_seed(0)
    model = AnchorHead().eval()
    program = trace(model, SHAPE, dynamic=True).program
    assert {line.split(" ")[0] for line in _held(program)} == {
        "aten.arange.default",
        "aten.view.default",
        "aten.expand.default",
    }
    done = {p.__name__: len(p(program).applied) for p in HEAD_PASSES}
    assert done == {
        "grid_from_map": 1,
        "fill_from_map": 0,
        "split_view": 1,
        "broadcast_expand": 2,
        "reshape_minus_one": 1,
    }
    targets = {n.target for n in program.graph.nodes}
    assert not targets & {aten.expand.default, aten.stack.default, aten.arange.default}
    assert _held(program) == []
    assert_same_at_every_size(program, model)


class Stacked(nn.Module):
    """The two grids of a map's cells stacked along ``dim``, scaled by the map's mean."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys, xs = (torch.arange(n, dtype=x.dtype) for n in x.shape[2:])
        yv, xv = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack((xv, yv), self.dim) * x.mean()


@pytest.mark.parametrize("dim", [-1, 1])
def test_a_stack_of_the_grids_along_the_last_axis_becomes_a_cat(dim: int) -> None:
    """Along the last axis a ``cat`` (``AnchorHead`` stacks along 2, ``Head`` along 0);
    along another the stack stays, of the squeezed planes (as any other reader)."""
    model = Stacked(dim)
    program = trace(model, SHAPE, dynamic=True).program
    assert len(grid_from_map(program).applied) == 1
    targets = [n.target for n in program.graph.nodes]
    assert (aten.stack.default in targets) == (dim == 1)
    assert_same_at_every_size(program, model)


def test_what_does_not_match_is_left_alone_with_the_reason() -> None:
    traced = trace(Unmatched(), SHAPE, dynamic=True)
    before = [n.target for n in traced.program.graph.nodes]
    grid, fill, views = (
        p(traced.program) for p in (grid_from_map, fill_from_map, reshape_minus_one)
    )
    split, expands = split_view(traced.program), broadcast_expand(traced.program)
    assert not grid.applied and not fill.applied and not views.applied
    assert not split.applied and not expands.applied
    assert (
        list(split.skipped.values()) == ["not a split of one fixed axis in two, the rest kept"] * 2
    )
    assert (
        list(expands.skipped.values()) == ["a reader does not broadcast to the expanded shape"] * 2
    )
    assert sorted(grid.skipped.values()) == [
        "arange is not a float arange",
        "no feature map of the grid's sizes and dtype",
    ]
    assert list(fill.skipped.values()) == ["not a fill of one symbolic size"]
    assert [v.startswith("2 sizes from H or W") for v in views.skipped.values()] == [True, True]
    assert [n.target for n in traced.program.graph.nodes] == before
    assert _held(traced.program)


@pytest.mark.slow
@pytest.mark.parametrize("head_type", [Head, AnchorHead])
def test_the_rewritten_head_converts_size_safe_in_ncnn(
    head_type: type[nn.Module], tmp_path: object
) -> None:
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    from pathlib import Path

    from ca_export.verify.ncnn_runtime import NcnnRunner

    torch.manual_seed(0)
    model = head_type().eval()
    traced = trace(model, SHAPE, dynamic=True)
    for rewrite in HEAD_PASSES:
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
