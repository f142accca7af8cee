"""``yolo_ca`` and ``yolo_cls_ca``: small YOLO-style networks with CA blocks in the backbone.

Written for ca-export (no code from any YOLO project): the layer kinds a YOLO fork with
Coordinate Attention has, at a size that exports at 64x64 in a few seconds.

- ``Conv``: conv (no bias, same padding) + BN + SiLU.
- ``C2f``: a 1x1 conv, its output split in two along channels, bottlenecks on the second
  half, every intermediate concatenated along channels, a 1x1 conv. Its split/concat are
  channel-wise and hold no pooling: they are *not* CA, and a finder must leave them alone.
- ``CoordAtt``: the official CA block (``nn.AdaptiveAvgPool2d`` (None, 1) / (1, None),
  ``permute``, concat on dim 2, conv1 + BN + h_swish written out, ``torch.split``, sigmoid
  gates, ``x * a_w * a_h``).
- ``SPPF``: three chained 5x5 stride-1 max pools, concatenated along channels.
- Neck: FPN/PAN with nearest upsampling and channel concats.
- ``Detect``: per level a box branch (4 distances) and a class branch; like the heads of
  YOLO forks it caches the anchor points and strides *on the module* in ``forward`` whenever
  the input size changes, and returns ``(predictions, [feature maps])``.
"""

from __future__ import annotations

import torch
from torch import nn

from sample_models.calibration import build_calibrated
from sample_models.mobilenetv2 import CoordAtt

_DET_SEED = 5
_CLS_SEED = 6

DETECT_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Downsampling of the P3, P4 and P5 maps the detector predicts on."""


class Conv(nn.Module):
    """Conv2d (no bias, padding ``k // 2``) + BN + SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        """Build the layer.

        Args:
            c_in: Input channels.
            c_out: Output channels.
            k: Kernel size (odd).
            s: Stride.
        """
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, BN and SiLU."""
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 ``Conv`` layers with a residual add."""

    def __init__(self, channels: int) -> None:
        """Build the block.

        Args:
            channels: Channels of the input and output.
        """
        super().__init__()
        self.cv1 = Conv(channels, channels, 3)
        self.cv2 = Conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + cv2(cv1(x))``."""
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """Split-transform-concat block: 1x1 conv, channel split, bottlenecks, channel concat."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        """Build the block.

        Args:
            c_in: Input channels.
            c_out: Output channels (even).
            n: Number of bottlenecks.
        """
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.hidden)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden) for _ in range(n))
        self.cv2 = Conv((2 + n) * self.hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split ``cv1(x)`` in two along channels, extend by each bottleneck, concat, ``cv2``."""
        parts = list(self.cv1(x).split((self.hidden, self.hidden), dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """1x1 conv, three chained 5x5 stride-1 max pools, channel concat of all four, 1x1 conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        """Build the block.

        Args:
            c_in: Input channels.
            c_out: Output channels.
        """
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.cv2 = Conv(4 * hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``cv1(x)`` three times in a row and fuse the four maps."""
        maps = [self.cv1(x)]
        for _ in range(3):
            maps.append(self.pool(maps[-1]))
        return self.cv2(torch.cat(maps, dim=1))


class Detect(nn.Module):
    """Anchor-free detection head over several levels.

    Per level a box branch predicts 4 distances (left, top, right, bottom, in units of the
    level's stride) from each anchor point (cell centre) and a class branch predicts logits.
    The anchor points and their strides depend on the input size only, so they are cached on
    the module (``anchors``, ``strides``, ``shape``) and rebuilt in ``forward`` when the shape
    of the first feature map changes: the state a trace must not leave behind. As in YOLO
    forks, the empty cache is a class attribute, so the first ``forward`` creates the instance
    attributes (``torch.export`` restores instance attributes it saw before tracing, not new
    ones).
    """

    shape: torch.Size | None = None
    anchors = torch.empty(0)
    strides = torch.empty(0)

    def __init__(
        self, num_classes: int, channels: tuple[int, ...], strides: tuple[int, ...]
    ) -> None:
        """Build the head.

        Args:
            num_classes: Number of class scores per anchor.
            channels: Channels of each input feature map.
            strides: Downsampling of each input feature map.
        """
        super().__init__()
        self.num_classes = num_classes
        self.stride_values = strides
        box_hidden = max(16, channels[0] // 4)
        cls_hidden = max(num_classes, channels[0])
        self.box = nn.ModuleList(
            nn.Sequential(Conv(c, box_hidden, 3), nn.Conv2d(box_hidden, 4, 1)) for c in channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(Conv(c, cls_hidden, 3), nn.Conv2d(cls_hidden, num_classes, 1))
            for c in channels
        )

    def output_layers(self) -> list[nn.Conv2d]:
        """The last conv of every branch (what calibration standardises)."""
        return [branch[-1] for branch in [*self.box, *self.cls]]  # type: ignore[misc]

    def reset_cache(self) -> None:
        """Forget the cached anchors (back to the class defaults); the next ``forward`` rebuilds
        them."""
        for name in ("shape", "anchors", "strides"):
            self.__dict__.pop(name, None)

    def _make_anchors(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres ``[2, A]`` (x, y in input pixels / stride) and strides ``[1, A]``."""
        points, strides = [], []
        for fmap, stride in zip(maps, self.stride_values, strict=True):
            h, w = fmap.shape[2:]
            ys = torch.arange(h, dtype=fmap.dtype, device=fmap.device) + 0.5
            xs = torch.arange(w, dtype=fmap.dtype, device=fmap.device) + 0.5
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((grid_x, grid_y)).flatten(1))
            strides.append(torch.full((1, h * w), float(stride), dtype=fmap.dtype))
        return torch.cat(points, dim=1), torch.cat(strides, dim=1)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Predictions ``[B, 4 + num_classes, A]`` (boxes as cx, cy, w, h in input pixels,
        then class probabilities) and the raw per-level maps ``[B, 4 + num_classes, H, W]``."""
        raw = [
            torch.cat((box(x), cls(x)), dim=1)
            for x, box, cls in zip(maps, self.box, self.cls, strict=True)
        ]
        if self.shape != raw[0].shape:
            self.anchors, self.strides = self._make_anchors(raw)
            self.shape = raw[0].shape
        batch = raw[0].shape[0]
        flat = torch.cat([r.flatten(2) for r in raw], dim=2)
        dist, logits = flat.split((4, self.num_classes), dim=1)
        left_top, right_bottom = dist.view(batch, 2, 2, -1).unbind(1)
        top_left = self.anchors - left_top
        bottom_right = self.anchors + right_bottom
        centre = (top_left + bottom_right) / 2
        size = bottom_right - top_left
        boxes = torch.cat((centre, size), dim=1) * self.strides
        return torch.cat((boxes, logits.sigmoid()), dim=1), raw


class YoloCA(nn.Module):
    """YOLO-style detector: backbone with a CA block after each C2f, SPPF, FPN/PAN neck, head.

    Backbone widths 16 (stride 2), 32 (4), 48 (8), 64 (16), 96 (32); a CA block follows the
    C2f of each stage from stride 4 on (4 blocks). Inputs need H and W divisible by 32.
    """

    def __init__(self, num_classes: int = 4) -> None:
        """Build the network.

        Args:
            num_classes: Number of object classes.
        """
        super().__init__()
        self.stem = Conv(3, 16, 3, 2)
        self.stage2 = nn.Sequential(Conv(16, 32, 3, 2), C2f(32, 32), CoordAtt(32, 32))
        self.stage3 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48), CoordAtt(48, 48))
        self.stage4 = nn.Sequential(Conv(48, 64, 3, 2), C2f(64, 64), CoordAtt(64, 64))
        self.stage5 = nn.Sequential(Conv(64, 96, 3, 2), C2f(96, 96), CoordAtt(96, 96), SPPF(96, 96))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = C2f(96 + 64, 64)
        self.top_down3 = C2f(64 + 48, 48)
        self.down3 = Conv(48, 48, 3, 2)
        self.bottom_up4 = C2f(48 + 64, 64)
        self.down4 = Conv(64, 64, 3, 2)
        self.bottom_up5 = C2f(64 + 96, 96)
        self.detect = Detect(num_classes, (48, 64, 96), DETECT_STRIDES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(predictions [B, 4 + classes, A], [P3, P4, P5 head maps])`` for ``[B, 3, H, W]``."""
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        n4 = self.top_down4(torch.cat([self.up(p5), p4], dim=1))
        n3 = self.top_down3(torch.cat([self.up(n4), p3], dim=1))
        m4 = self.bottom_up4(torch.cat([self.down3(n3), n4], dim=1))
        m5 = self.bottom_up5(torch.cat([self.down4(m4), p5], dim=1))
        return self.detect([n3, m4, m5])


class YoloClsCA(nn.Module):
    """YOLO-style classifier: the detector's first three stages (2 CA blocks), 1x1 conv to
    128, global average pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
        """
        super().__init__()
        self.stem = Conv(3, 16, 3, 2)
        self.stage2 = nn.Sequential(Conv(16, 32, 3, 2), C2f(32, 32), CoordAtt(32, 32))
        self.stage3 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48, n=2), CoordAtt(48, 48))
        self.head = Conv(48, 128)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        x = self.head(self.stage3(self.stage2(self.stem(x))))
        return self.linear(torch.flatten(self.pool(x), 1))


def yolo_ca() -> YoloCA:
    """YOLO-style detector (4 CA blocks, 4 classes) with calibrated deterministic weights.

    Every box and class output conv is standardised. The head's anchor cache is empty on
    return, so the first ``forward`` (a trace, too) fills it.
    """
    model = build_calibrated(
        YoloCA, seed=_DET_SEED, output_layer=lambda net: net.detect.output_layers()
    )
    model.detect.reset_cache()
    return model


def yolo_cls_ca() -> YoloClsCA:
    """YOLO-style classifier (2 CA blocks, 10 classes) with calibrated deterministic weights."""
    return build_calibrated(YoloClsCA, seed=_CLS_SEED, output_layer=lambda net: net.linear)
