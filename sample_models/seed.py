"""``seed_ca``: a small classifier built on the project's seed CA block, quirks included."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sample_models.calibration import build_calibrated

_SEED = 1


class SeedCoordAtt(nn.Module):
    """CA block as the seed repository writes it.

    ``F.adaptive_avg_pool2d`` pools, an in-place ``transpose_(2, 3)`` on the H strip, concat and
    split along dim 3, a shared ``fc1`` (1x1 conv + BN + ReLU), sigmoid gates. The gates are
    never transposed back: both are ``[B, C, 1, *]`` and broadcast along W, so the height gate is
    applied per column and the block only runs when H == W (otherwise the multiply fails).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        """Build the block.

        Args:
            channels: Channels C of the input and output.
            reduction: Ratio C / mip of the shared 1x1 conv.

        Raises:
            ValueError: If ``channels // reduction`` is 0.
        """
        super().__init__()
        mip = channels // reduction
        if mip < 1:
            raise ValueError(f"channels={channels} leaves no channel after reduction={reduction}")
        self.fc1 = nn.Sequential(
            nn.Conv2d(channels, mip, 1), nn.BatchNorm2d(mip), nn.ReLU(inplace=True)
        )
        self.xfc = nn.Conv2d(mip, channels, 1)
        self.yfc = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` ([B, C, H, W], H == W) by its two strip descriptors."""
        _, _, h, w = x.size()
        xap = F.adaptive_avg_pool2d(x, (h, 1))
        yap = F.adaptive_avg_pool2d(x, (1, w))
        mer = torch.cat([xap.transpose_(2, 3), yap], dim=3)
        fc1 = self.fc1(mer)
        xat, yat = torch.split(fc1, (h, w), dim=3)
        xat = torch.sigmoid(self.xfc(xat))
        yat = torch.sigmoid(self.yfc(yat))
        return x * xat * yat


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 conv (no bias) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class SeedNet(nn.Module):
    """Stem conv 3->32 /2, three conv stages (32, 64 /2, 64 /2) each followed by a seed CA block,
    global average pool and a linear classifier. Total stride 8; needs square inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
        """
        super().__init__()
        self.stem = _conv_bn_relu(3, 32, 2)
        self.stages = nn.Sequential(
            _conv_bn_relu(32, 32, 1),
            SeedCoordAtt(32),
            _conv_bn_relu(32, 64, 2),
            SeedCoordAtt(64),
            _conv_bn_relu(64, 64, 2),
            SeedCoordAtt(64),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, S, S]``."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def seed_ca() -> nn.Module:
    """Seed classifier (3 seed CA blocks, 10 classes) with calibrated deterministic weights.

    CA flavour: the seed block (``F.adaptive_avg_pool2d``, in-place ``transpose_``, cat/split on
    dim 3, BN + ReLU, sigmoid gates never transposed back, so square inputs only).
    """
    return build_calibrated(SeedNet, seed=_SEED, output_layer=lambda net: net.fc)
