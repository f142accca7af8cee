"""Detection: every public CA shape is found, every look-alike twin is not."""

from __future__ import annotations

import pytest
from ca_zoo import NEGATIVE, POSITIVE, ZooCase

from ca_export.patterns import find
from ca_export.tracing import trace

REASONS = {
    "mean_max_w_pool": "concat axis is channels",
    "same_axis_pools": "both pools keep the same axis",
    "conv1_3x3": "not spatially pointwise",
    "softmax_before_split": "not spatially pointwise",
    "gates_added": "not multiplied",
    "gate_product_added": "not multiplied",
}


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_finds_every_ca_shape(case: ZooCase) -> None:
    blocks, rejected = find(trace(case.build(), case.input_shape, dynamic=False).program.graph)
    assert [b.channels for b in blocks] == list(case.channels)
    assert [b.mip for b in blocks] == list(case.mip)
    assert rejected == []


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_look_alike_is_not_ca(case: ZooCase) -> None:
    blocks, rejected = find(trace(case.build(), case.input_shape, dynamic=False).program.graph)
    assert blocks == []
    if case.name in REASONS:
        assert any(REASONS[case.name] in r.reason for r in rejected), rejected


def _case(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def test_seed_quirk_is_a_warning_and_official_is_clean() -> None:
    seed = find(trace(_case("seed").build(), (1, 3, 16, 16), dynamic=False).program.graph)[0]
    official = find(trace(_case("official").build(), (1, 3, 16, 24), False).program.graph)[0]
    assert len(seed[0].findings) == 1
    assert "H gate is applied along W" in seed[0].findings[0]
    assert official[0].findings == []


def test_variant_describes_how_the_block_is_written() -> None:
    timm = find(trace(_case("timm").build(), _case("timm").input_shape, False).program.graph)[0]
    official = _case("official")
    off = find(trace(official.build(), official.input_shape, False).program.graph)[0]
    assert timm[0].variant["pool"] == "mean"
    assert timm[0].variant["swap"] == "transpose"
    assert off[0].variant["pool"] == "adaptive_avg_pool2d"
    assert off[0].variant["swap"] == "permute"


def test_inline_block_is_owned_by_its_enclosing_module() -> None:
    case = _case("inline_inverted_residual")
    blocks, _ = find(trace(case.build(), case.input_shape, False).program.graph)
    assert blocks[0].module == "2"


def test_found_under_dynamic_shapes() -> None:
    case = _case("official")
    blocks, _ = find(trace(case.build(), case.input_shape, dynamic=True).program.graph)
    assert [b.channels for b in blocks] == list(case.channels)
