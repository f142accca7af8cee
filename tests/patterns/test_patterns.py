"""Detection: every public CA shape is found, every look-alike twin is not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ca_zoo import NEGATIVE, POSITIVE, ZooCase

from ca_export.patterns import find
from ca_export.tracing import Traced

ZooTrace = Callable[..., Traced]

REASONS = {
    "mean_max_w_pool": "concat axis is channels",
    "same_axis_pools": "both pools keep the same axis",
    "conv1_3x3": "not spatially pointwise",
    "softmax_before_split": "not spatially pointwise",
    "gates_added": "not multiplied",
    "gate_product_added": "not multiplied",
    "batch_stats_bn": "not spatially pointwise",
}


IRS = {"decomposed": True, "export_ir": False}
"""The two IRs blocks are found in: decomposed (Core ML, ExecuTorch), and torch.export's own
with in-place ops made out of place (ONNX, whose exporter decomposes)."""


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_finds_every_ca_shape(case: ZooCase, ir: str, zoo_trace: ZooTrace) -> None:
    blocks, rejected = find(zoo_trace(case.name, decompose=IRS[ir]).program.graph)
    assert [b.channels for b in blocks] == list(case.channels)
    assert [b.mip for b in blocks] == list(case.mip)
    assert rejected == []


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_look_alike_is_not_ca(case: ZooCase, ir: str, zoo_trace: ZooTrace) -> None:
    blocks, rejected = find(zoo_trace(case.name, decompose=IRS[ir]).program.graph)
    assert blocks == []
    if case.name in REASONS:
        assert any(REASONS[case.name] in r.reason for r in rejected), rejected


def _case(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def test_seed_quirk_is_a_warning_and_official_is_clean(zoo_trace: ZooTrace) -> None:
    seed = find(zoo_trace("seed").program.graph)[0]
    official = find(zoo_trace("official").program.graph)[0]
    assert len(seed[0].findings) == 1
    assert "H gate is applied along W" in seed[0].findings[0]
    assert official[0].findings == []


def test_variant_describes_how_the_block_is_written(zoo_trace: ZooTrace) -> None:
    timm = find(zoo_trace("timm").program.graph)[0]
    off = find(zoo_trace("official").program.graph)[0]
    assert timm[0].variant["pool"] == "mean"
    assert timm[0].variant["swap"] == "transpose"
    assert off[0].variant["pool"] == "adaptive_avg_pool2d"
    assert off[0].variant["swap"] == "permute"


def test_inline_block_is_owned_by_its_enclosing_module(zoo_trace: ZooTrace) -> None:
    blocks, _ = find(zoo_trace("inline_inverted_residual").program.graph)
    assert blocks[0].module == "2"


def test_found_under_dynamic_shapes(zoo_trace: ZooTrace) -> None:
    blocks, _ = find(zoo_trace("official", dynamic=True).program.graph)
    assert [b.channels for b in blocks] == list(_case("official").channels)
