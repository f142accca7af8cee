"""``digits_ca``: a small CA classifier trained on scikit-learn's bundled handwritten digits.

Every other sample has calibrated random weights, so what a lossy format does to it is
noise; this one is a trained network, judged on held-out data it never saw.

Data (``digit_images``): ``sklearn.datasets.load_digits`` (1797 8x8 images, values 0..16)
as 8-bit grey (``round(v * 255 / 16)``) resized to 32x32 with Pillow's bilinear filter: the
PNG files of ``sample_models/data/``. The network takes them as ``ca-export`` reads any
image (RGB, /255, ImageNet mean/std: ``ca_export.inputs.load_inputs``), input ``1,3,32,32``.
The split is fixed (``HELD_OUT`` of every ``EVAL_EVERY`` images, in dataset order, are held
out). ``sample_models/train_digits.py`` trains the weights in ``DigitsCA.WEIGHTS`` and writes
the evaluation set (ImageFolder layout, one folder per class) and the calibration folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sample_models.mobilenetv2 import CoordAtt

DATA = Path(__file__).parent / "data"
WEIGHTS = DATA / "digits_ca.pt"
EVAL_DIR = DATA / "digits_eval"
"""Held-out digits in ImageFolder layout: ``0/``..``9/``, 32x32 grey PNG files."""
CALIBRATION_DIR = DATA / "digits_calibration"
"""Training digits to calibrate int8 on (``--calibration``), 32x32 grey PNG files."""
SIZE = 32
INPUT_SHAPE = (1, 3, SIZE, SIZE)
EVAL_EVERY = 5
"""One image in ``EVAL_EVERY`` (index % 5 == 0) is held out: 360 of 1797."""
HELD_OUT_TOP1 = 354 / 360
"""Top-1 accuracy of the committed weights on the held-out digits (``train_digits`` prints it)."""
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 conv (no bias) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsCA(nn.Module):
    """Stem 3->16, then two stages (32 /2, 64 /2) each a conv followed by an official CA
    block, global average pool and a linear classifier over 10 digits; total stride 4."""

    def __init__(self, num_classes: int = 10) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
        """
        super().__init__()
        self.stem = _conv_bn_relu(3, 16, 1)
        self.stages = nn.Sequential(
            _conv_bn_relu(16, 32, 2),
            CoordAtt(32, 32, groups=4),
            _conv_bn_relu(32, 64, 2),
            CoordAtt(64, 64, groups=4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as 32x32 uint8 grey images ``[N, 32, 32]`` and their labels ``[N]``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    resized = [
        np.asarray(Image.fromarray(g).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for g in grey
    ]
    return np.stack(resized), digits.target.astype(np.int64)


def held_out(count: int) -> np.ndarray:
    """Whether each of ``count`` images (in dataset order) is held out for evaluation."""
    return np.arange(count) % EVAL_EVERY == 0


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 grey images ``[N, H, W]`` as the network's input ``[N, 3, H, W]``: RGB copies,
    /255, ImageNet mean/std (what ``ca-export`` does to an image file)."""
    x = torch.from_numpy(images).float().div(255)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(MEAN)[None, :, None, None]
    std = torch.tensor(STD)[None, :, None, None]
    return ((x - mean) / std).contiguous()


def digits_ca() -> nn.Module:
    """The trained digits classifier (2 official CA blocks, 10 classes), input 1,3,32,32.

    CA flavour: the official one (``sample_models.mobilenetv2.CoordAtt``). The weights are
    ``sample_models/data/digits_ca.pt``, trained by ``python -m sample_models.train_digits``.
    """
    with torch.random.fork_rng(devices=[]):
        model = DigitsCA()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()
