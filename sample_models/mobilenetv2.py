"""``mobilenetv2_ca``: MobileNetV2-1.0 with CA as in the CA paper's official reference model.

``mobilenetv2`` is the same network without CA, the reference for what CA costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sample_models.calibration import build_calibrated

_SEED = 2

INVERTED_RESIDUAL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""MobileNetV2-1.0 stages as ``(expansion t, channels c, repeats n, first stride s)``."""


class HSigmoid(nn.Module):
    """Hard sigmoid written out: ``relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the hard sigmoid."""
        return F.relu6(x + 3) / 6


class HSwish(nn.Module):
    """Hard swish written out: ``x * h_sigmoid(x)``."""

    def __init__(self) -> None:
        """Build the activation."""
        super().__init__()
        self.sigmoid = HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the hard swish."""
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """CA block of the official code (houqb/CoordAttention).

    ``nn.AdaptiveAvgPool2d`` pools, the W strip ``permute``d to ``[B, C, W, 1]``, concat on
    dim 2, 1x1 conv (bias) + BN + h_swish, ``torch.split`` into ``[h, w]``, the W part permuted
    back, 1x1 convs to C with sigmoid gates, ``identity * a_w * a_h``.
    """

    def __init__(self, inp: int, oup: int, groups: int = 32) -> None:
        """Build the block.

        Args:
            inp: Channels of the input.
            oup: Channels of the gates; must equal ``inp`` for the final multiply.
            groups: Reduction ratio; the shared conv has ``max(8, inp // groups)`` channels.
        """
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // groups)
        self.conv1 = nn.Conv2d(inp, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HSwish()
        self.conv_h = nn.Conv2d(mip, oup, 1)
        self.conv_w = nn.Conv2d(mip, oup, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` ([B, C, H, W]) by its H and W strip descriptors."""
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return identity * a_w * a_h


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """Conv (no bias, same padding) + BN + ReLU6, as a list to splice into a Sequential."""
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
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [pw expand + BN + ReLU6] -> dw 3x3 + BN + ReLU6 -> [CA] -> pw linear.

    The expansion and the CA block are present only when the expansion ratio is not 1. The input
    is added back when the stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self, inp: int, oup: int, stride: int, expand_ratio: int, attention: bool = True
    ) -> None:
        """Build the block.

        Args:
            inp: Input channels.
            oup: Output channels.
            stride: Stride of the depthwise conv, 1 or 2.
            expand_ratio: Hidden channels are ``inp * expand_ratio``.
            attention: Whether the block has its CA block.
        """
        super().__init__()
        hidden = inp * expand_ratio
        self.identity = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _conv_bn_relu6(inp, hidden, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        if expand_ratio != 1 and attention:
            layers.append(CoordAtt(hidden, hidden))
        layers += [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, with the residual connection when shapes allow."""
        if self.identity:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2CA(nn.Module):
    """MobileNetV2-1.0 (stem 32, ``INVERTED_RESIDUAL_SETTINGS``, 1x1 conv to 1280, global
    average pool, dropout, linear) with a CA block in each of the 16 expanded blocks."""

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.2, attention: bool = True
    ) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
            dropout: Dropout probability before the classifier (inactive in eval mode).
            attention: Whether the expanded blocks have their CA block (False: plain MobileNetV2).
        """
        super().__init__()
        channels = 32
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn_relu6(3, channels, 3, 2))]
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t, attention))
                channels = c
        self.features = nn.Sequential(*layers)
        self.conv = nn.Sequential(*_conv_bn_relu6(channels, 1280, 1))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        x = self.conv(self.features(x))
        return self.classifier(self.dropout(torch.flatten(self.avgpool(x), 1)))


def mobilenetv2_ca() -> nn.Module:
    """MobileNetV2-1.0 with 16 CA blocks, 1000 classes, calibrated deterministic weights.

    CA flavour: the official one (``nn.AdaptiveAvgPool2d`` pools, ``permute``, cat/split on
    dim 2, conv1 with bias + BN + h_swish written out, sigmoid gates), after the depthwise conv
    of every block with expansion 6.
    """
    return build_calibrated(MobileNetV2CA, seed=_SEED, output_layer=lambda net: net.classifier)


def mobilenetv2() -> nn.Module:
    """MobileNetV2-1.0 without CA, 1000 classes, drawn and calibrated like ``mobilenetv2_ca``.

    The weights come from the same seed; with no CA parameters in the draw order they are not
    those of ``mobilenetv2_ca``. It is the baseline that tells what the CA blocks cost.
    """
    return build_calibrated(
        lambda: MobileNetV2CA(attention=False),
        seed=_SEED,
        output_layer=lambda net: net.classifier,
    )
