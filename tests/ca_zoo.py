"""Zoo of tiny networks for the structural Coordinate Attention (CA) detector tests.

A CA block (Hou et al., CVPR 2021) on ``x`` of shape ``[B, C, H, W]``::

    pool over W -> [B,C,H,1] --------------------------.
                                                        cat -> conv1 1x1 (C->mip) [+BN] -> act
    pool over H -> [B,C,1,W] -> swap H/W -> [B,C,W,1] -'                                    |
                                            .-------------- split back into H and W parts -'
                                            |-> H part -> conv_h 1x1 (mip->C) -> gate -> a_h
                                            '-> W part -> swap back -> conv_w 1x1 -> gate -> a_w
    out = x * a_h * a_w

``POSITIVE`` holds one case per public way of writing that block; ``NEGATIVE`` holds look-alikes
(most of them one-edit twins of a positive) that the detector must reject. ``channels`` and
``mip`` list, in graph order, the C and mip of each block the detector should report.

Every ``build`` is deterministic: weights come from a ``torch.Generator`` seeded per case, BN
running statistics are calibrated by seeded train-mode passes, and the module is returned in
eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Shape = tuple[int, int, int, int]

SHAPE: Shape = (1, 3, 16, 24)
"""Default input: non-square, so an H/W mix-up changes shapes instead of hiding."""

SQUARE_SHAPE: Shape = (1, 3, 16, 16)
"""Input for the seed variant, whose un-transposed gates only broadcast when H == W."""

_CALIBRATION_BATCH = 4
_CALIBRATION_PASSES = 2


@dataclass(frozen=True)
class ZooCase:
    """A module factory and what the detector must find in its exported graph."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: Shape
    ca_blocks: int
    channels: tuple[int, ...]
    mip: tuple[int, ...]
    note: str


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Standard-normal tensor of ``shape`` drawn from a local generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _h_swish(x: torch.Tensor) -> torch.Tensor:
    """h_swish exactly as the official CA code writes it out."""
    return x * F.relu6(x + 3) / 6


# --------------------------------------------------------------------------- positives


class _CALayers(nn.Module):
    """Parameters of a CA block: conv1 (C->mip), optional bn1, conv_h and conv_w (mip->C)."""

    def __init__(self, channels: int, mip: int, *, bn: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mip, 1, bias=bias)
        if bn:
            self.bn1 = nn.BatchNorm2d(mip)
        self.conv_h = nn.Conv2d(mip, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(mip, channels, 1, bias=bias)


class OfficialCA(_CALayers):
    """Official code: AdaptiveAvgPool2d pools, permute, cat dim 2, BN + h_swish, torch.split.

    ``_shared`` and ``_combine`` are the two steps the twins below replace.
    """

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))

    def _shared(self, y: torch.Tensor) -> torch.Tensor:
        return _h_swish(self.bn1(self.conv1(y)))

    def _combine(self, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
        return x * a_w * a_h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self._shared(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return self._combine(identity, a_h, a_w)


class SeedCA(_CALayers):
    """Seed-repo code: F.adaptive_avg_pool2d, in-place transpose_, cat and split on dim 3.

    The gates are never transposed back: both are [B,C,1,*] and broadcast along W, so the block
    only runs when H == W. It is still the CA graph and must be found.
    """

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = F.adaptive_avg_pool2d(x, (h, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, w))
        x_h.transpose_(2, 3)
        y = self.relu(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=3))))
        x_h, x_w = torch.split(y, (h, w), dim=3)
        xat = torch.sigmoid(self.conv_h(x_h))
        yat = torch.sigmoid(self.conv_w(x_w))
        return x * xat * yat


class TimmCA(_CALayers):
    """timm ``CoordAttn``: ``mean(keepdim=True)`` pools, transpose(-1, -2), bias-free convs,
    BN + nn.Hardswish."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip, bias=False)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).transpose(-1, -2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        a_h, a_w = torch.split(y, [h, w], dim=2)
        a_w = a_w.transpose(-1, -2)
        a_h = self.conv_h(a_h).sigmoid()
        a_w = self.conv_w(a_w).sigmoid()
        return x * a_h * a_w


class SlicingCA(OfficialCA):
    """Official pools and gates, but split by slicing ``y[:, :, :h]`` / ``y[:, :, h:]``;
    BN + ReLU6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, _ = x.shape
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = F.relu6(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h = y[:, :, :h]
        y_w = y[:, :, h:].permute(0, 1, 3, 2)
        return x * self.conv_h(y_h).sigmoid() * self.conv_w(y_w).sigmoid()


class HardsigmoidExpandCA(_CALayers):
    """No BN, SiLU, F.hardsigmoid gates, each gate expanded to [B,C,H,W] before the multiply."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip, bn=False)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = F.silu(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = F.hardsigmoid(self.conv_h(y_h)).expand(-1, -1, h, w)
        a_w = F.hardsigmoid(self.conv_w(y_w.permute(0, 1, 3, 2))).expand(-1, -1, h, w)
        return x * a_h * a_w


class MulOrderCA(OfficialCA):
    """Official block with the input multiplied last (``gates_first``: ``a_h * a_w * x``) or in
    the middle (``nested``: ``a_w * (x * a_h)``)."""

    def __init__(self, channels: int, mip: int, order: Literal["gates_first", "nested"]) -> None:
        super().__init__(channels, mip)
        self.order = order

    def _combine(self, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
        if self.order == "gates_first":
            return a_h * a_w * x
        return a_w * (x * a_h)


class PermuteHBranchCA(_CALayers):
    """The H branch is permuted to [B,C,1,H] and joined with the [B,C,1,W] branch on dim 3;
    BN + Hardswish; the H part is permuted back after the split."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = self.pool_h(x).permute(0, 1, 3, 2)
        x_w = self.pool_w(x)
        y = F.hardswish(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=3))))
        y_h, y_w = torch.split(y, [h, w], dim=3)
        a_h = self.conv_h(y_h.permute(0, 1, 3, 2)).sigmoid()
        a_w = self.conv_w(y_w).sigmoid()
        return x * a_h * a_w


class InvertedResidualInlineCA(nn.Module):
    """MobileNetV2-style block whose forward runs the CA steps inline on the depthwise output
    (``ca_*`` convs are attributes of this block, no CA submodule), then projects and adds."""

    def __init__(self, channels: int, hidden: int, mip: int) -> None:
        super().__init__()
        self.expand_conv = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(hidden)
        self.dw_conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.ca_conv1 = nn.Conv2d(hidden, mip, 1)
        self.ca_bn = nn.BatchNorm2d(mip)
        self.ca_conv_h = nn.Conv2d(mip, hidden, 1)
        self.ca_conv_w = nn.Conv2d(mip, hidden, 1)
        self.project_conv = nn.Conv2d(hidden, channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.expand_bn(self.expand_conv(x)))
        out = F.relu6(self.dw_bn(self.dw_conv(out)))
        _, _, h, w = out.shape
        pooled_h = F.adaptive_avg_pool2d(out, (h, 1))
        pooled_w = F.adaptive_avg_pool2d(out, (1, w)).permute(0, 1, 3, 2)
        y = _h_swish(self.ca_bn(self.ca_conv1(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        gate_h = self.ca_conv_h(y_h).sigmoid()
        gate_w = self.ca_conv_w(y_w.permute(0, 1, 3, 2)).sigmoid()
        out = out * gate_h * gate_w
        return x + self.project_bn(self.project_conv(out))


class TwoInOneCA(nn.Module):
    """Two official CA blocks run inline, one after the other, in one forward: both blocks'
    concats belong to this module (each block's convs are a ``_CALayers`` attribute)."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__()
        self.first = _CALayers(channels, mip)
        self.second = _CALayers(channels, mip)

    @staticmethod
    def _ca(layers: _CALayers, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        pooled_h = F.adaptive_avg_pool2d(x, (h, 1))
        pooled_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
        y = _h_swish(layers.bn1(layers.conv1(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        gate_h = layers.conv_h(y_h).sigmoid()
        gate_w = layers.conv_w(y_w.permute(0, 1, 3, 2)).sigmoid()
        return x * gate_w * gate_h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._ca(self.second, self._ca(self.first, x))


class SandglassInlineCA(nn.Module):
    """MobileNeXt-style sandglass block whose forward runs the CA steps inline after its first
    depthwise conv, computing the W gate before the H gate (``ca_*`` convs are attributes of
    this block), then reduces, expands, runs the second depthwise conv and adds the input."""

    def __init__(self, channels: int, reduced: int, mip: int) -> None:
        super().__init__()
        self.dw1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.dw1_bn = nn.BatchNorm2d(channels)
        self.ca_conv1 = nn.Conv2d(channels, mip, 1)
        self.ca_bn = nn.BatchNorm2d(mip)
        self.ca_conv_h = nn.Conv2d(mip, channels, 1)
        self.ca_conv_w = nn.Conv2d(mip, channels, 1)
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(reduced)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)
        self.dw2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.dw2_bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.dw1_bn(self.dw1(x)))
        _, _, h, w = out.shape
        pooled_h = out.mean(3, keepdim=True)
        pooled_w = out.mean(2, keepdim=True).transpose(2, 3)
        y = F.relu6(self.ca_bn(self.ca_conv1(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        gate_w = self.ca_conv_w(y_w.transpose(2, 3)).sigmoid()
        gate_h = self.ca_conv_h(y_h).sigmoid()
        out = out * gate_h * gate_w
        out = self.reduce_bn(self.reduce(out))
        out = F.relu6(self.expand_bn(self.expand(out)))
        return x + self.dw2_bn(self.dw2(out))


# --------------------------------------------------------------------------- negatives


class CBAMSpatialAttention(nn.Module):
    """CBAM spatial attention: mean and max over channels, cat on dim 1, 7x7 conv, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(1, keepdim=True)
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return x * torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1)))


class MeanMaxWPoolAttention(nn.Module):
    """Mean- and max-pool over W, cat on channels (dim 1), 1x1 conv 2C->C, sigmoid, multiply."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(3, keepdim=True), x.amax(3, keepdim=True)], dim=1)
        return x * self.conv(pooled).sigmoid()


class SameAxisPoolCA(OfficialCA):
    """Twin of ``OfficialCA`` whose second branch also pools over W (two [B,C,H,1] strips,
    cat on dim 2, split [h, h]): no branch carries W positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, _ = x.shape
        y = self._shared(torch.cat([self.pool_h(x), x.mean(3, keepdim=True)], dim=2))
        y_a, y_b = torch.split(y, [h, h], dim=2)
        return x * self.conv_h(y_a).sigmoid() * self.conv_w(y_b).sigmoid()


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class EfficientLocalAttention(nn.Module):
    """ELA / strip attention: W- and H-pools each get their own depthwise 1-D conv and gate, and
    ``x * a_h * a_w`` as in CA, but no cat, no shared conv1 and no split."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv_h = nn.Conv2d(
            channels, channels, (kernel_size, 1), padding=(pad, 0), groups=channels
        )
        self.conv_w = nn.Conv2d(
            channels, channels, (1, kernel_size), padding=(0, pad), groups=channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = self.conv_h(x.mean(3, keepdim=True)).sigmoid()
        a_w = self.conv_w(x.mean(2, keepdim=True)).sigmoid()
        return x * a_h * a_w


class Conv3x3SharedCA(OfficialCA):
    """Twin of ``OfficialCA`` with a 3x3 conv1: it mixes neighbouring H/W positions (and the
    H-W seam of the concat), so the block is not pointwise and cannot be rewritten exactly."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip)
        self.conv1 = nn.Conv2d(channels, mip, 3, padding=1)


class SoftmaxBeforeSplitCA(OfficialCA):
    """Twin of ``OfficialCA`` with a softmax over the concatenated H+W axis before the split,
    which couples the two branches."""

    def _shared(self, y: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super()._shared(y), dim=2)


class BatchStatsCA(OfficialCA):
    """Twin of ``OfficialCA`` whose BN keeps no running statistics: even in eval mode it
    normalizes with the statistics of the batch's whole H+W strip, so it is not pointwise."""

    def __init__(self, channels: int, mip: int) -> None:
        super().__init__(channels, mip)
        self.bn1 = nn.BatchNorm2d(mip, track_running_stats=False)


class AdditiveGateCA(OfficialCA):
    """Twin of ``OfficialCA`` whose gates are added to the input: ``x + a_h + a_w`` (``sum``)
    or ``x + a_h * a_w`` (``gate_product``, the gates still meet in a multiply)."""

    def __init__(self, channels: int, mip: int, mode: Literal["sum", "gate_product"]) -> None:
        super().__init__(channels, mip)
        self.mode = mode

    def _combine(self, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
        if self.mode == "sum":
            return x + a_h + a_w
        return x + a_h * a_w


# --------------------------------------------------------------------------- building


def _net(channels: int, block: nn.Module) -> nn.Sequential:
    """Stem conv 3->C + ReLU, the block under test, and a 1x1 head so the block is not the
    graph output."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), block, nn.Conv2d(channels, 8, 1)
    )


def _two_blocks() -> nn.Sequential:
    """Official CA at 32 channels on 16x24, strided conv to 64 channels, official CA on 8x12."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        OfficialCA(32, 8),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        OfficialCA(64, 16),
        nn.Conv2d(64, 8, 1),
    )


@torch.no_grad()
def _init_weights(module: nn.Module, gen: torch.Generator) -> None:
    """Fan-in scaled normal conv weights, small biases, BN affine near identity."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            fan_in = sub.weight[0].numel()
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) * fan_in**-0.5)
            if sub.bias is not None:
                sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=gen))
        elif isinstance(sub, nn.BatchNorm2d):
            sub.weight.copy_(1 + 0.1 * torch.randn(sub.weight.shape, generator=gen))
            sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=gen))
        elif list(sub.parameters(recurse=False)):
            raise TypeError(f"no seeded init for {type(sub).__name__}")


@torch.no_grad()
def _calibrate_bn(module: nn.Module, input_shape: Shape, seed: int) -> None:
    """Set BN running stats to the average batch statistics of a few seeded inputs."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration passes
    module.train()
    batch_shape = (_CALIBRATION_BATCH, *input_shape[1:])
    for i in range(_CALIBRATION_PASSES):
        module(seeded_input(batch_shape, seed=1000 * seed + i))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum


def _build(make: Callable[[], nn.Module], seed: int, input_shape: Shape) -> nn.Module:
    """Instantiate, seed-initialise, calibrate BN and return the module in eval mode."""
    module = make()
    _init_weights(module, torch.Generator().manual_seed(seed))
    _calibrate_bn(module, input_shape, seed)
    return module.eval()


def _case(
    name: str,
    make: Callable[[], nn.Module],
    *,
    seed: int,
    note: str,
    channels: tuple[int, ...] = (),
    mip: tuple[int, ...] = (),
    input_shape: Shape = SHAPE,
) -> ZooCase:
    """A case whose expected block count is ``len(channels)``; negatives leave it empty."""
    return ZooCase(
        name=name,
        build=partial(_build, make, seed, input_shape),
        input_shape=input_shape,
        ca_blocks=len(channels),
        channels=channels,
        mip=mip,
        note=note,
    )


POSITIVE: list[ZooCase] = [
    _case(
        "official",
        lambda: _net(32, OfficialCA(32, 8)),
        seed=1,
        channels=(32,),
        mip=(8,),
        note="AdaptiveAvgPool2d, permute W branch, cat dim 2, BN + h_swish, split, sigmoid",
    ),
    _case(
        "seed",
        lambda: _net(64, SeedCA(64, 16)),
        seed=2,
        channels=(64,),
        mip=(16,),
        input_shape=SQUARE_SHAPE,
        note="F.adaptive_avg_pool2d, in-place transpose_, cat/split dim 3, gates not swapped back",
    ),
    _case(
        "timm",
        lambda: _net(64, TimmCA(64, 8)),
        seed=3,
        channels=(64,),
        mip=(8,),
        note="mean(keepdim) pools, transpose(-1, -2), bias-free convs, BN + Hardswish",
    ),
    _case(
        "slicing",
        lambda: _net(32, SlicingCA(32, 16)),
        seed=4,
        channels=(32,),
        mip=(16,),
        note="split by y[:, :, :h] / y[:, :, h:] slicing, BN + ReLU6",
    ),
    _case(
        "hardsigmoid_expand",
        lambda: _net(64, HardsigmoidExpandCA(64, 8)),
        seed=5,
        channels=(64,),
        mip=(8,),
        note="no BN, SiLU, F.hardsigmoid gates, both gates expand(-1, -1, h, w)",
    ),
    _case(
        "mul_gates_first",
        lambda: _net(32, MulOrderCA(32, 8, "gates_first")),
        seed=6,
        channels=(32,),
        mip=(8,),
        note="official block, output a_h * a_w * x",
    ),
    _case(
        "mul_nested",
        lambda: _net(64, MulOrderCA(64, 16, "nested")),
        seed=7,
        channels=(64,),
        mip=(16,),
        note="official block, output a_w * (x * a_h)",
    ),
    _case(
        "inline_inverted_residual",
        lambda: _net(32, InvertedResidualInlineCA(32, 64, 8)),
        seed=8,
        channels=(64,),
        mip=(8,),
        note="CA steps inline in an inverted-residual forward, on the 64-channel dw output",
    ),
    _case(
        "permute_h_branch",
        lambda: _net(32, PermuteHBranchCA(32, 8)),
        seed=9,
        channels=(32,),
        mip=(8,),
        note="H branch permuted to [B,C,1,H], cat/split dim 3, H part permuted back, Hardswish",
    ),
    _case(
        "two_blocks",
        _two_blocks,
        seed=10,
        channels=(32, 64),
        mip=(8, 16),
        note="official CA at 32 ch on 16x24, stride-2 conv, official CA at 64 ch on 8x12",
    ),
    _case(
        "inline_sandglass",
        lambda: _net(32, SandglassInlineCA(32, 8, 8)),
        seed=11,
        channels=(32,),
        mip=(8,),
        note="CA inline in a MobileNeXt sandglass forward, W gate computed before the H gate",
    ),
    _case(
        "two_in_one",
        lambda: _net(32, TwoInOneCA(32, 8)),
        seed=12,
        channels=(32, 32),
        mip=(8, 8),
        note="two official CA blocks inline in one module's forward (one module, two blocks)",
    ),
]

NEGATIVE: list[ZooCase] = [
    _case(
        "cbam_spatial",
        lambda: _net(32, CBAMSpatialAttention()),
        seed=101,
        note="mean/max over channels, cat dim 1, 7x7 conv, sigmoid",
    ),
    _case(
        "mean_max_w_pool",
        lambda: _net(32, MeanMaxWPoolAttention(32)),
        seed=102,
        note="mean/max over W, cat dim 1 (channels), 1x1 conv, sigmoid, multiply",
    ),
    _case(
        "same_axis_pools",
        lambda: _net(32, SameAxisPoolCA(32, 8)),
        seed=103,
        note="twin of official: both branches pool over W, cat dim 2, split [h, h]",
    ),
    _case(
        "se",
        lambda: _net(32, SEBlock(32, 8)),
        seed=104,
        note="global pool, 1x1 conv, ReLU, 1x1 conv, sigmoid, multiply",
    ),
    _case(
        "ela_no_shared_conv",
        lambda: _net(32, EfficientLocalAttention(32)),
        seed=105,
        note="both strip pools and x * a_h * a_w, but separate per-axis convs, no cat/split",
    ),
    _case(
        "conv1_3x3",
        lambda: _net(32, Conv3x3SharedCA(32, 8)),
        seed=106,
        note="twin of official: conv1 is 3x3, not pointwise",
    ),
    _case(
        "softmax_before_split",
        lambda: _net(32, SoftmaxBeforeSplitCA(32, 8)),
        seed=107,
        note="twin of official: softmax over the H+W axis between act and split",
    ),
    _case(
        "gates_added",
        lambda: _net(32, AdditiveGateCA(32, 8, "sum")),
        seed=108,
        note="twin of official: x + a_h + a_w",
    ),
    _case(
        "gate_product_added",
        lambda: _net(32, AdditiveGateCA(32, 8, "gate_product")),
        seed=109,
        note="twin of official: x + a_h * a_w, the gates multiply each other but not x",
    ),
    _case(
        "batch_stats_bn",
        lambda: _net(32, BatchStatsCA(32, 8)),
        seed=110,
        note="twin of official: BN without running stats (batch statistics in eval mode)",
    ),
]
