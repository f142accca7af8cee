"""Detector and classifier of the fork; run from the repo root as ``models/yolo.py:factory``."""

from __future__ import annotations

import torch
from torch import nn

from models.common import C2f, Conv, CoordAtt


class Detect(nn.Module):
    """Per-level box (4) and class maps; anchor centres cached on the module in ``forward``."""

    shape = None
    anchors = torch.empty(0)

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.nc, self.stride = nc, strides
        self.m = nn.ModuleList(nn.Conv2d(c, 4 + nc, 1) for c in ch)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        xs = [m(x) for m, x in zip(self.m, xs, strict=True)]
        if self.shape != xs[0].shape:
            grids = []
            for x, s in zip(xs, self.stride, strict=True):
                h, w = x.shape[2:]
                gy, gx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
                grids.append(torch.stack((gx, gy)).flatten(1) * s)
            self.anchors, self.shape = torch.cat(grids, 1), xs[0].shape
        flat = torch.cat([x.flatten(2) for x in xs], 2)
        xy = self.anchors + flat[:, :2]
        return torch.cat((xy, flat[:, 2:4].exp(), flat[:, 4:].sigmoid()), 1), xs


class DetectCA(nn.Module):
    """Backbone with two CA blocks, a top-down neck, a two-level head (strides 8, 16)."""

    def __init__(self, nc: int = 3) -> None:
        super().__init__()
        self.b1 = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32))
        self.b2 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48), CoordAtt(48))
        self.b3 = nn.Sequential(Conv(48, 64, 3, 2), C2f(64, 64), CoordAtt(64))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = C2f(64 + 48, 48)
        self.detect = Detect(nc, (48, 64), (8, 16))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        p3 = self.b2(self.b1(x))
        p4 = self.b3(p3)
        return self.detect([self.fuse(torch.cat([self.up(p4), p3], 1)), p4])


class ClassifyCA(nn.Module):
    """Backbone with one CA block, global pool, linear."""

    def __init__(self, nc: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(Conv(3, 16, 3, 2), C2f(16, 32), Conv(32, 32, 3, 2), CoordAtt(32))
        self.head = nn.Linear(32, nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def _seeded(make: type[nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def detector() -> nn.Module:
    """The detector, eval mode, seeded weights."""
    return _seeded(DetectCA, 0)


def classifier() -> nn.Module:
    """The classifier, eval mode, seeded weights."""
    return _seeded(ClassifyCA, 1)
