"""Sample-model registry: builds, determinism, input sensitivity, shapes and CA blocks."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from sample_models import CA_BLOCKS, REGISTRY, build
from sample_models.calibration import seeded_input
from sample_models.mobilenetv2 import CoordAtt
from sample_models.mobilenext import MeanPoolCoordAtt
from sample_models.seed import SeedCoordAtt
from sample_models.segnet import HardsigmoidCoordAtt
from sample_models.yolo import DETECT_STRIDES
from sample_models.yolo import CoordAtt as YoloCoordAtt

NAMES = sorted(REGISTRY)

SQUARE = (64, 64)
NON_SQUARE = (64, 96)

CA_CLASS: dict[str, type[nn.Module]] = {
    "seed_ca": SeedCoordAtt,
    "mobilenetv2_ca": CoordAtt,
    "mobilenetv2": CoordAtt,
    "mobilenext_ca": MeanPoolCoordAtt,
    "ca_segnet": HardsigmoidCoordAtt,
    "yolo_ca": YoloCoordAtt,
    "yolo_cls_ca": YoloCoordAtt,
    "yolov5_ca": CoordAtt,
}
"""Per model: its CA block class (``mobilenetv2`` is the no-CA baseline: none of them)."""

GATE_CONVS: dict[type[nn.Module], tuple[str, str]] = {
    SeedCoordAtt: ("xfc", "yfc"),
    CoordAtt: ("conv_h", "conv_w"),
    MeanPoolCoordAtt: ("conv_h", "conv_w"),
    HardsigmoidCoordAtt: ("conv_h", "conv_w"),
    YoloCoordAtt: ("conv_h", "conv_w"),
}
"""Per CA class: the 1x1 convs whose outputs go into the gate nonlinearity."""

NUM_CLASSES = {
    "seed_ca": 10,
    "mobilenetv2_ca": 1000,
    "mobilenetv2": 1000,
    "mobilenext_ca": 1000,
    "ca_segnet": 5,
    "yolo_ca": 4,
    "yolo_cls_ca": 10,
    "yolov5_ca": 80,
}
DENSE = {"ca_segnet"}
"""Models that output one map per class at the input resolution."""
DETECTORS = {"yolo_ca"}
"""Models that return ``(predictions [B, 4 + classes, anchors], [feature maps])``."""
ANCHOR_DETECTORS = {"yolov5_ca"}
"""Models that return one tensor ``[B, 3 anchors per cell, 5 + classes]`` (box, objectness,
class probabilities)."""

MIN_SENSITIVITY = 0.3
"""Lower bound on ``||y1 - y2|| / ||y1 - mean(y1)||`` for two seeded inputs. Independent outputs
score about 1.4; the seed classifier without output standardisation (mean logits dominate)
scores about 0.03. Measured for the registry at 64x64: 0.9 to 1.3."""

MIN_DETECTOR_SENSITIVITY = 0.1
"""The same bound for a detector's raw head maps: at 64x64 its maps are 8x8 to 2x2, where the
input-independent effect of zero padding is a large part of each map. Measured: 0.17."""

MIN_OUTPUT_STD = 0.1
"""Lower bound on the std of one sample's output (logits are standardised to about 1)."""

MIN_UNSATURATED = 0.25
"""Lower bound, per CA block, on the share of gate pre-activations within (-3, 3), where both
sigmoid and hard sigmoid are away from 0 and 1. Lowest measured share at 64x64: 0.44."""


@functools.cache
def _built(name: str) -> nn.Module:
    """One shared build per model for the read-only tests."""
    return build(name)


def _input(size: tuple[int, int] = SQUARE, seed: int = 0) -> torch.Tensor:
    """A seeded image batch of one."""
    return seeded_input((1, 3, *size), seed)


def _expected_shape(name: str, size: tuple[int, int]) -> tuple[int, ...]:
    """Output shape for a batch of one at ``size``."""
    if name in DENSE:
        return (1, NUM_CLASSES[name], *size)
    if name in DETECTORS:
        anchors = sum((size[0] // s) * (size[1] // s) for s in DETECT_STRIDES)
        return (1, 4 + NUM_CLASSES[name], anchors)
    if name in ANCHOR_DETECTORS:
        cells = sum((size[0] // s) * (size[1] // s) for s in DETECT_STRIDES)
        return (1, 3 * cells, 5 + NUM_CLASSES[name])
    return (1, NUM_CLASSES[name])


def _predict(name: str, x: torch.Tensor) -> torch.Tensor:
    """The model's output for ``x``; a detector's predictions (its first output)."""
    with torch.no_grad():
        out = _built(name)(x)
    return out[0] if name in DETECTORS else out


def _signal(name: str, x: torch.Tensor) -> torch.Tensor:
    """What must depend on the input: the output, a detector's raw head maps or an anchor
    detector's objectness and class probabilities (decoded boxes are dominated by the
    input-independent anchor grid)."""
    if name in ANCHOR_DETECTORS:
        return _predict(name, x)[..., 4:]
    if name not in DETECTORS:
        return _predict(name, x)
    with torch.no_grad():
        _, maps = _built(name)(x)
    return torch.cat([m.flatten() for m in maps])


def _ca_blocks(model: nn.Module, cls: type[nn.Module]) -> list[nn.Module]:
    """The modules of ``model`` whose type is exactly ``cls``."""
    return [m for m in model.modules() if type(m) is cls]


def test_registry_names() -> None:
    assert set(REGISTRY) == {
        "seed_ca",
        "mobilenetv2_ca",
        "mobilenetv2",
        "mobilenext_ca",
        "ca_segnet",
        "yolo_ca",
        "yolo_cls_ca",
        "yolov5_ca",
    }


def test_build_unknown_name_raises_key_error() -> None:
    with pytest.raises(KeyError, match="seed_ca"):
        build("no_such_model")


@pytest.mark.parametrize("name", NAMES)
def test_builds_in_eval_mode(name: str) -> None:
    model = _built(name)
    assert isinstance(model, nn.Module)
    assert not any(m.training for m in model.modules())


EXPENSIVE = {"mobilenetv2_ca", "mobilenext_ca", "mobilenetv2", "yolov5_ca"}
"""Models whose second build (BN calibration of a full network) runs with ``-m slow``."""


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow if n in EXPENSIVE else ()) for n in NAMES]
)
def test_build_is_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    """A second build equals the shared first one. The cheap builds run in the fast suite;
    every model shares ``sample_models.calibration``; the full sweep runs with ``-m slow``."""
    first = _built(name).state_dict()
    rng_state = torch.random.get_rng_state()
    second = build(name).state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_finite(name: str) -> None:
    out = _predict(name, _input())
    assert tuple(out.shape) == _expected_shape(name, SQUARE)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"seed_ca"}))
def test_non_square_input(name: str) -> None:
    out = _predict(name, _input(NON_SQUARE))
    assert tuple(out.shape) == _expected_shape(name, NON_SQUARE)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_input(name: str) -> None:
    first, second = _signal(name, _input(seed=1)), _signal(name, _input(seed=2))
    assert first.std() > MIN_OUTPUT_STD
    assert second.std() > MIN_OUTPUT_STD
    sensitivity = (first - second).norm() / (first - first.mean()).norm()
    assert sensitivity > (MIN_DETECTOR_SENSITIVITY if name in DETECTORS else MIN_SENSITIVITY)


@pytest.mark.parametrize("name", NAMES)
def test_ca_block_count(name: str) -> None:
    assert len(_ca_blocks(_built(name), CA_CLASS[name])) == CA_BLOCKS[name]


def test_every_sample_has_a_block_count() -> None:
    assert set(CA_BLOCKS) == set(REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_ca_gates_not_saturated(name: str) -> None:
    model = _built(name)
    cls = CA_CLASS[name]
    pre_gates: list[torch.Tensor] = []
    handles = [
        getattr(block, attr).register_forward_hook(lambda _m, _i, out: pre_gates.append(out))
        for block in _ca_blocks(model, cls)
        for attr in GATE_CONVS[cls]
    ]
    try:
        with torch.no_grad():
            model(_input())
    finally:
        for handle in handles:
            handle.remove()
    assert len(pre_gates) == 2 * CA_BLOCKS[name]
    for pre in pre_gates:
        assert (pre.abs() < 3).float().mean() > MIN_UNSATURATED


def test_seed_ca_rejects_non_square_input() -> None:
    with torch.no_grad(), pytest.raises(RuntimeError):
        _built("seed_ca")(_input(NON_SQUARE))
