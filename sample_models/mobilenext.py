"""``mobilenext_ca``: a reduced-depth MobileNeXt (sandglass blocks) with a mean-pool CA flavour."""

from __future__ import annotations

import math

import torch
from torch import nn

from sample_models.calibration import build_calibrated

_SEED = 3
_CALIBRATION_SIZE: tuple[int, int] = (128, 128)
"""Calibrated at 64x64, at 224x224 up to two thirds of the gate pre-activations of the deepest
CA blocks are saturated (beyond +-3) and the logits' input sensitivity drops to about 0.3;
calibrated at 128x128, both are as healthy at 224x224 as at 64x64 (sensitivity about 1)."""

SANDGLASS_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 2, 2),
    (6, 288, 2, 2),
    (6, 384, 2, 1),
    (6, 576, 2, 2),
    (6, 960, 2, 1),
    (6, 1280, 1, 1),
)
"""Stages as ``(reduction t, channels c, repeats n, first stride s)``: the MobileNeXt-1.0
widths and strides with at most two blocks per stage (13 blocks instead of 20)."""


class MeanPoolCoordAtt(nn.Module):
    """CA block in the timm style, with split by slicing.

    ``x.mean(dim=3/2, keepdim=True)`` pools, the W strip ``transpose(2, 3)``d to
    ``[B, C, W, 1]``, concat on dim 2, 1x1 conv without bias + BN + ``nn.Hardswish``, split by
    slicing ``y[:, :, :h]`` / ``y[:, :, h:]``, the W part transposed back, 1x1 convs (bias) to C
    with ``torch.sigmoid`` gates, ``x * a_h * a_w``.
    """

    def __init__(self, channels: int, reduction: int = 32, min_mip: int = 8) -> None:
        """Build the block.

        Args:
            channels: Channels C of the input and output.
            reduction: Ratio C / mip of the shared 1x1 conv.
            min_mip: Lower bound on mip.
        """
        super().__init__()
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` ([B, C, H, W]) by its H and W strip descriptors."""
        h = x.shape[2]
        x_h = x.mean(dim=3, keepdim=True)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        a_h = torch.sigmoid(self.conv_h(y[:, :, :h]))
        a_w = torch.sigmoid(self.conv_w(y[:, :, h:].transpose(2, 3)))
        return x * a_h * a_w


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """Conv (no bias, same padding) + BN, as a list to splice into a Sequential."""
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            (kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]


class SandGlass(nn.Module):
    """Sandglass block: dw 3x3 + BN + ReLU6 -> CA -> pw reduce + BN (linear) -> pw expand + BN
    + ReLU6 -> dw 3x3 (stride) + BN (linear), plus the input when the stride is 1 and the
    channel count is unchanged."""

    def __init__(self, inp: int, oup: int, stride: int, reduction: int) -> None:
        """Build the block.

        Args:
            inp: Input channels.
            oup: Output channels.
            stride: Stride of the second depthwise conv, 1 or 2.
            reduction: Bottleneck channels are ``inp // reduction``, raised to at least
                ``oup / 6`` rounded up to a multiple of 16 (as in MobileNeXt).
        """
        super().__init__()
        hidden = max(inp // reduction, 16 * math.ceil(oup / 96))
        self.identity = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            *_conv_bn(inp, inp, 3, groups=inp),
            nn.ReLU6(inplace=True),
            MeanPoolCoordAtt(inp),
            *_conv_bn(inp, hidden, 1),
            *_conv_bn(hidden, oup, 1),
            nn.ReLU6(inplace=True),
            *_conv_bn(oup, oup, 3, stride, groups=oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, with the residual connection when shapes allow."""
        if self.identity:
            return x + self.conv(x)
        return self.conv(x)


class MobileNeXtCA(nn.Module):
    """Stem conv 3->32 /2 + BN + ReLU6, sandglass blocks per ``SANDGLASS_SETTINGS`` (each with a
    CA block after its first depthwise conv), global average pool, dropout, linear."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
            dropout: Dropout probability before the classifier (inactive in eval mode).
        """
        super().__init__()
        channels = 32
        layers: list[nn.Module] = [
            nn.Sequential(*_conv_bn(3, channels, 3, 2), nn.ReLU6(inplace=True))
        ]
        for t, c, n, s in SANDGLASS_SETTINGS:
            for i in range(n):
                layers.append(SandGlass(channels, c, s if i == 0 else 1, t))
                channels = c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        x = self.avgpool(self.features(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def mobilenext_ca() -> nn.Module:
    """Reduced-depth MobileNeXt-1.0 (13 sandglass blocks, 1000 classes) with a CA block after
    the first depthwise conv of each block, calibrated deterministic weights.

    CA flavour: ``mean(keepdim=True)`` pools, ``transpose(2, 3)``, cat on dim 2, conv1 without
    bias + BN + ``nn.Hardswish``, split by slicing, ``torch.sigmoid`` gates.
    """
    return build_calibrated(
        MobileNeXtCA,
        seed=_SEED,
        output_layer=lambda net: net.classifier,
        input_size=_CALIBRATION_SIZE,
    )
