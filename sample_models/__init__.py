"""Registry of sample networks with Coordinate Attention (CA) blocks.

Each factory returns an eval-mode network with deterministic, calibrated weights (see
``sample_models.calibration``); each network uses its own way of writing the CA block.

- ``seed_ca``: small 10-class classifier with the seed repository's CA block (in-place
  ``transpose_``, cat/split on dim 3, gates never transposed back, so square inputs only).
- ``mobilenetv2_ca``: MobileNetV2-1.0, 1000 classes, 16 CA blocks in the official flavour
  (``nn.AdaptiveAvgPool2d``, ``permute``, BN + h_swish written out, sigmoid gates).
- ``mobilenetv2``: the same network without CA (the baseline for what CA costs).
- ``mobilenext_ca``: reduced-depth MobileNeXt-1.0, 1000 classes, 13 CA blocks in a timm-like
  flavour (``mean`` pools, ``transpose``, bias-free conv1 + BN + ``nn.Hardswish``, slicing).
- ``ca_segnet``: 5-class segmentation network, output at input resolution, 3 CA blocks without
  BN (``F.adaptive_avg_pool2d``, SiLU, ``F.hardsigmoid`` gates, ``expand_as``).
- ``yolo_ca``: YOLO-style detector, 4 classes, 4 official-flavour CA blocks in the backbone,
  C2f split/concat and SPPF (not CA), FPN/PAN neck, a head that caches anchors on itself in
  ``forward`` and returns ``(predictions, [feature maps])``; H and W multiples of 32.
- ``yolo_cls_ca``: YOLO-style classifier, 10 classes, 2 official-flavour CA blocks.
- ``yolov5_ca``: YOLOv5s laid out like a YOLOv5 fork (model dict parsed into Conv/C3/SPPF
  layers), 80 classes, 3 official-flavour CA blocks (after the C3 of P3 and P4, after SPPF),
  PAN neck, an anchor-based head that caches its grids in ``forward`` and returns one tensor
  ``[N, anchors, 85]`` (boxes in input pixels); H and W multiples of 32, at least 64.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sample_models.mobilenetv2 import mobilenetv2, mobilenetv2_ca
from sample_models.mobilenext import mobilenext_ca
from sample_models.seed import seed_ca
from sample_models.segnet import ca_segnet
from sample_models.yolo import yolo_ca, yolo_cls_ca
from sample_models.yolov5 import yolov5_ca

__all__ = ["CA_BLOCKS", "REGISTRY", "build"]

REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "seed_ca": seed_ca,
    "mobilenetv2_ca": mobilenetv2_ca,
    "mobilenetv2": mobilenetv2,
    "mobilenext_ca": mobilenext_ca,
    "ca_segnet": ca_segnet,
    "yolo_ca": yolo_ca,
    "yolo_cls_ca": yolo_cls_ca,
    "yolov5_ca": yolov5_ca,
}
"""Sample network factories by name."""

CA_BLOCKS: dict[str, int] = {
    "seed_ca": 3,
    "mobilenetv2_ca": 16,
    "mobilenetv2": 0,
    "mobilenext_ca": 13,
    "ca_segnet": 3,
    "yolo_ca": 4,
    "yolo_cls_ca": 2,
    "yolov5_ca": 3,
}
"""How many CA blocks each sample network holds (the count every finder must report)."""


def build(name: str) -> nn.Module:
    """Build the sample network registered as ``name``.

    Args:
        name: A key of ``REGISTRY``.

    Returns:
        The network, in eval mode with deterministic weights.

    Raises:
        KeyError: If ``name`` is not registered; the message lists the known names.
    """
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown sample model {name!r}; known: {', '.join(sorted(REGISTRY))}"
        ) from None
    return factory()
