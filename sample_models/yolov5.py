"""``yolov5_ca``: a YOLOv5s-sized detector with CA blocks, laid out like a YOLOv5 fork.

Written for ca-export (no code from ultralytics or the ``yolov5`` package, both AGPL): the
structure the most common CA networks in the wild have, a YOLOv5 fork with ``CoordAtt``
added to its model dict.

- ``Conv`` (conv without bias, same padding, + BN + SiLU), ``Bottleneck``, ``C3`` (two 1x1
  branches, bottlenecks on one, channel concat, 1x1 conv) and ``SPPF`` (three chained 5x5
  max pools, channel concat): their concats are channel-wise and pool nothing, so they are
  not CA.
- ``CoordAtt``: the official block of ``sample_models.mobilenetv2`` (``CoordAtt(inp, oup,
  groups=32)``, the signature forks register), after the C3 of P3 and of P4 and after SPPF.
- ``MODEL_DICT``: backbone and head as ``[from, number, module, args]`` rows, YOLOv5s
  depth 0.33 and width 0.50, built by ``parse_model``; ``Model.forward`` runs the layers
  in order, keeping the outputs later rows read (``from`` other than -1).
- Neck: PAN with nearest ``nn.Upsample`` and ``Concat`` over channels.
- ``Detect``: 3 levels (strides 8, 16, 32), 3 anchors each (YOLOv5's default anchors, in
  pixels), ``no = 5 + nc`` outputs per anchor. ``forward`` caches the grids and anchor
  grids on the module whenever a feature map's size changes, and in eval mode decodes
  ``xy = (2 sigmoid - 0.5 + grid) * stride``, ``wh = (2 sigmoid) ** 2 * anchor_grid``,
  objectness and class probabilities into one tensor ``[N, anchors_total, 5 + nc]``.

Inputs need H and W divisible by 32 and at least 64 (the CA block after SPPF pools a P5
map, which must be larger than 1x1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sample_models.calibration import build_calibrated
from sample_models.mobilenetv2 import CoordAtt

_SEED = 7
_CALIBRATION_SIZE = (128, 128)
"""Calibrated at 64x64 (P5 maps of 2x2), the head's activations reach a std of about 600 at
320x320; at 128x128 they stay below 5 at both 64x64 and 320x320."""

ANCHORS: tuple[tuple[int, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
"""YOLOv5's default anchors in pixels, ``(w, h)`` pairs for P3/8, P4/16 and P5/32."""

MODEL_DICT: dict[str, Any] = {
    "nc": 80,
    "depth_multiple": 0.33,
    "width_multiple": 0.50,
    "anchors": ANCHORS,
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],  # 0  P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1  P2/4
        [-1, 3, "C3", [128]],  # 2
        [-1, 1, "Conv", [256, 3, 2]],  # 3  P3/8
        [-1, 6, "C3", [256]],  # 4
        [-1, 1, "CoordAtt", [256]],  # 5
        [-1, 1, "Conv", [512, 3, 2]],  # 6  P4/16
        [-1, 9, "C3", [512]],  # 7
        [-1, 1, "CoordAtt", [512]],  # 8
        [-1, 1, "Conv", [1024, 3, 2]],  # 9  P5/32
        [-1, 3, "C3", [1024]],  # 10
        [-1, 1, "SPPF", [1024, 5]],  # 11
        [-1, 1, "CoordAtt", [1024]],  # 12
    ],
    "head": [
        [-1, 1, "Conv", [512, 1, 1]],  # 13
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],  # 14
        [[-1, 8], 1, "Concat", [1]],  # 15  cat backbone P4
        [-1, 3, "C3", [512, False]],  # 16
        [-1, 1, "Conv", [256, 1, 1]],  # 17
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],  # 18
        [[-1, 5], 1, "Concat", [1]],  # 19  cat backbone P3
        [-1, 3, "C3", [256, False]],  # 20  P3/8 out
        [-1, 1, "Conv", [256, 3, 2]],  # 21
        [[-1, 17], 1, "Concat", [1]],  # 22  cat head P4
        [-1, 3, "C3", [512, False]],  # 23  P4/16 out
        [-1, 1, "Conv", [512, 3, 2]],  # 24
        [[-1, 13], 1, "Concat", [1]],  # 25  cat head P5
        [-1, 3, "C3", [1024, False]],  # 26  P5/32 out
        [[20, 23, 26], 1, "Detect", ["nc", "anchors"]],  # 27
    ],
}
"""YOLOv5s with 3 CA rows (5, 8, 12), as a fork's ``yolov5s-ca.yaml`` would read."""


class Conv(nn.Module):
    """Conv2d (no bias; padding ``k // 2`` unless given) + BN + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None) -> None:
        """Build the layer.

        Args:
            c1: Input channels.
            c2: Output channels.
            k: Kernel size.
            s: Stride.
            p: Padding; ``k // 2`` when None.
        """
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, BN and SiLU."""
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 ``Conv`` then 3x3 ``Conv``, with a residual add when ``shortcut`` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5) -> None:
        """Build the block.

        Args:
            c1: Input channels.
            c2: Output channels.
            shortcut: Whether to add the input back (only when c1 == c2).
            e: Hidden channels as a fraction of ``c2``.
        """
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(hidden, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + cv2(cv1(x))``, or ``cv2(cv1(x))`` without the shortcut."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block: ``cv3(cat(bottlenecks(cv1(x)), cv2(x)))``, concat over channels."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        """Build the block.

        Args:
            c1: Input channels.
            c2: Output channels.
            n: Number of bottlenecks.
            shortcut: Whether the bottlenecks add their input back.
        """
        super().__init__()
        hidden = c2 // 2
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(c1, hidden)
        self.cv3 = Conv(2 * hidden, c2)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, 1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fuse the bottleneck branch and the 1x1 branch."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """1x1 conv, three chained ``k x k`` stride-1 max pools, channel concat of all four, 1x1
    conv."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        """Build the block.

        Args:
            c1: Input channels.
            c2: Output channels.
            k: Max pool kernel size (odd).
        """
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(4 * hidden, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``cv1(x)`` three times in a row and fuse the four maps."""
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension: int = 1) -> None:
        """Build the layer.

        Args:
            dimension: Axis to concatenate along.
        """
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """``torch.cat(x, d)``."""
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """Anchor-based YOLOv5 head: a 1x1 conv per level to ``na * (5 + nc)`` channels.

    ``anchors`` (a buffer) holds the anchors in units of each level's stride; ``stride`` is
    set by ``Model`` from a probe forward. ``grid`` and ``anchor_grid`` are per-level caches
    filled in ``forward`` when a map's size differs from the cached one: state a trace of
    this module leaves behind, as in YOLOv5.

    In train mode ``forward`` returns the raw maps ``[N, na, ny, nx, no]``. In eval mode it
    returns the decoded predictions ``[N, anchors_total, 5 + nc]`` (boxes as cx, cy, w, h in
    input pixels, then objectness and class probabilities) when ``export`` is True, and
    ``(predictions, raw maps)`` when it is False. YOLOv5's default is False; here it is True,
    because ca-export exports every tensor of a tuple output and this sample is meant to give
    one output tensor. Set ``export = False`` on the instance for YOLOv5's tuple.
    """

    export: bool = True

    def __init__(self, nc: int, anchors: tuple[tuple[int, ...], ...], ch: list[int]) -> None:
        """Build the head.

        Args:
            nc: Number of classes.
            anchors: Per level, the anchors' ``(w, h)`` pairs in pixels, flattened.
            ch: Channels of each input map.
        """
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.stride = torch.ones(self.nl)
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def reset_grids(self) -> None:
        """Empty the grid caches; the next ``forward`` rebuilds them."""
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets ``[1, na, ny, nx, 2]`` (x, y) and anchors in pixels, same shape."""
        anchors = self.anchors[i]
        shape = (1, self.na, ny, nx, 2)
        ys = torch.arange(ny, device=anchors.device, dtype=anchors.dtype)
        xs = torch.arange(nx, device=anchors.device, dtype=anchors.dtype)
        yv, xv = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape)
        anchor_grid = (anchors * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid

    def forward(
        self, x: list[torch.Tensor]
    ) -> list[torch.Tensor] | torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw maps (train), predictions (eval, ``export``) or both (eval); see the class."""
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.training:
                continue
            if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
            xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 - 0.5 + self.grid[i]) * self.stride[i]
            wh = (wh * 2) ** 2 * self.anchor_grid[i]
            z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * ny * nx, self.no))
        if self.training:
            return x
        return torch.cat(z, 1) if self.export else (torch.cat(z, 1), x)


MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "C3": C3,
    "SPPF": SPPF,
    "CoordAtt": CoordAtt,
    "Concat": Concat,
    "Detect": Detect,
    "nn.Upsample": nn.Upsample,
}
"""The module names a model dict may use."""

_CHANNEL_MODULES = (Conv, C3, SPPF, CoordAtt)
"""Modules whose first argument is output channels, scaled by the width multiple."""


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of ``divisor`` that is at least ``x``."""
    return math.ceil(x / divisor) * divisor


def parse_model(d: dict[str, Any], ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a model dict.

    Each row ``[from, number, module, args]`` becomes one layer tagged with ``i`` (its row),
    ``f`` (``from``: -1 for the previous layer, or row indices) and ``type`` (the module
    name). ``number`` is scaled by ``depth_multiple`` (C3 takes it as its bottleneck count);
    the output channels of ``_CHANNEL_MODULES`` by ``width_multiple``, rounded up to a
    multiple of 8. String args ``"nc"`` and ``"anchors"`` are read from the dict.

    Args:
        d: The model dict (see ``MODEL_DICT``).
        ch: Input channels, as a one-element list.

    Returns:
        The layers in order, and the rows whose outputs later rows read.
    """
    gd, gw = d["depth_multiple"], d["width_multiple"]
    layers: list[nn.Module] = []
    save: list[int] = []
    channels = list(ch)
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        m = MODULES[name]
        args = [d[a] if a in ("nc", "anchors") else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in _CHANNEL_MODULES:
            c1, c2 = channels[f], make_divisible(args[0] * gw)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(channels[j] for j in f)
        elif m is Detect:
            args.append([channels[j] for j in f])
        else:
            c2 = channels[f]
        layer = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        layer.i, layer.f, layer.type = i, f, name
        save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        layers.append(layer)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(save)


class Model(nn.Module):
    """Detection model built from a model dict; the last layer is ``Detect``.

    The strides of ``Detect`` are measured with a 256x256 probe forward in train mode, and its
    anchors are divided by them, as YOLOv5 builds its models.
    """

    def __init__(self, cfg: dict[str, Any] | None = None, ch: int = 3) -> None:
        """Build the model.

        Args:
            cfg: The model dict; ``MODEL_DICT`` when None.
            ch: Input channels.
        """
        super().__init__()
        self.model, self.save = parse_model(MODEL_DICT if cfg is None else cfg, [ch])
        detect = self.model[-1]
        probe = 256
        with torch.no_grad():
            maps = self.train()(torch.zeros(1, ch, probe, probe))
        detect.stride = torch.tensor([probe / m.shape[-2] for m in maps])
        detect.anchors /= detect.stride.view(-1, 1, 1)

    def _apply(self, fn: Any, recurse: bool = True) -> Model:
        """``nn.Module._apply`` that also converts the head's stride and grid caches."""
        super()._apply(fn, recurse)
        detect = self.model[-1]
        detect.stride = fn(detect.stride)
        detect.grid = [fn(g) for g in detect.grid]
        detect.anchor_grid = [fn(g) for g in detect.anchor_grid]
        return self

    def forward(self, x: torch.Tensor) -> Any:
        """Run the layers in order; each reads the previous output or the saved rows ``f``."""
        y: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


def yolov5_ca() -> Model:
    """YOLOv5s with 3 CA blocks, 80 classes, calibrated deterministic weights.

    BN statistics and the three ``Detect`` output convs are calibrated on 128x128 batches;
    the grid caches are empty on return, so the first ``forward`` (a trace, too) fills them.
    Returns one tensor ``[N, 3 * (H/8 * W/8 + H/16 * W/16 + H/32 * W/32), 85]``
    (``Detect.export`` is True).
    """
    model = build_calibrated(
        Model,
        seed=_SEED,
        output_layer=lambda net: list(net.model[-1].m),
        input_size=_CALIBRATION_SIZE,
    )
    model.model[-1].reset_grids()
    return model
