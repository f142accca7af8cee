"""``ca_segnet``: a small segmentation network whose backbone uses a BN-free CA flavour."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sample_models.calibration import build_calibrated

_SEED = 4


class HardsigmoidCoordAtt(nn.Module):
    """CA block without BN and with hard-sigmoid gates.

    ``F.adaptive_avg_pool2d(x, (None, 1))`` / ``(1, None)`` pools, the W strip ``permute``d to
    ``[B, C, W, 1]``, concat on dim 2, 1x1 conv (bias) + ``nn.SiLU`` (no BN), ``torch.split``
    into ``[h, w]``, the W part permuted back, 1x1 convs to C with ``F.hardsigmoid`` gates, each
    gate ``expand_as(x)`` before ``x * a_h * a_w``.
    """

    def __init__(self, channels: int, reduction: int = 8, min_mip: int = 8) -> None:
        """Build the block.

        Args:
            channels: Channels C of the input and output.
            reduction: Ratio C / mip of the shared 1x1 conv.
            min_mip: Lower bound on mip.
        """
        super().__init__()
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.act = nn.SiLU()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` ([B, C, H, W]) by its H and W strip descriptors."""
        _, _, h, w = x.shape
        x_h = F.adaptive_avg_pool2d(x, (None, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)
        y = self.act(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = F.hardsigmoid(self.conv_h(y_h))
        a_w = F.hardsigmoid(self.conv_w(y_w.permute(0, 1, 3, 2)))
        return x * a_h.expand_as(x) * a_w.expand_as(x)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
) -> nn.Sequential:
    """Conv (no bias, same padding) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CASegNet(nn.Module):
    """Encoder-decoder for dense prediction.

    Backbone: stem conv 3->32 /2, then three stride-2 stages (48 at 1/4, 64 at 1/8, 96 at 1/16)
    each ending in a CA block. Head: the 1/16 features, reduced to 64 channels, are upsampled to
    the 1/4 skip features, concatenated with them, fused by a 3x3 conv and classified by a 1x1
    conv; the logits are bilinearly upsampled to the input size. Any input whose H and W are
    multiples of 16 works, square or not.
    """

    def __init__(self, num_classes: int = 5) -> None:
        """Build the network.

        Args:
            num_classes: Number of output maps.
        """
        super().__init__()
        self.stem = _conv_bn_relu(3, 32, stride=2)
        self.stage1 = nn.Sequential(
            _conv_bn_relu(32, 48, stride=2), _conv_bn_relu(48, 48), HardsigmoidCoordAtt(48)
        )
        self.stage2 = nn.Sequential(_conv_bn_relu(48, 64, stride=2), HardsigmoidCoordAtt(64))
        self.stage3 = nn.Sequential(_conv_bn_relu(64, 96, stride=2), HardsigmoidCoordAtt(96))
        self.reduce = _conv_bn_relu(96, 64, kernel_size=1)
        self.fuse = _conv_bn_relu(64 + 48, 64)
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class maps ``[B, num_classes, H, W]`` for images ``[B, 3, H, W]``."""
        skip = self.stage1(self.stem(x))
        deep = self.reduce(self.stage3(self.stage2(skip)))
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.fuse(torch.cat([deep, skip], dim=1)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def ca_segnet() -> nn.Module:
    """Segmentation network (3 CA blocks in the backbone, 5 classes, output at input resolution)
    with calibrated deterministic weights.

    CA flavour: ``F.adaptive_avg_pool2d`` with ``None`` sizes, ``permute``, ``torch.split``,
    conv1 with bias and no BN, ``nn.SiLU``, ``F.hardsigmoid`` gates expanded with ``expand_as``.
    """
    return build_calibrated(CASegNet, seed=_SEED, output_layer=lambda net: net.classifier)
