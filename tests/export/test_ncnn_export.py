"""ncnn param files: parsing, output blobs, and the baked-size lint (positive and negative)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca_export.errors import BadInputError
from ca_export.export import ncnn

# The stock pnnx conversion of one official-flavour CA block at 224 (from mobilenetv2_ca).
STOCK = """7767517
12 14
Input                    in0                      0 1 in0
Split                    splitncnn_0              1 3 in0 6 7 8
Pooling                  aap_200                  1 1 8 9 0=1 18=-233 7=1 8=1
Pooling                  aap_201                  1 1 7 10 0=1 18=1 7=1 8=-233
Permute                  permute_168              1 1 10 11 0=1
Concat                   cat_0                    2 1 9 11 12 0=1
Convolution              conv_52                  1 1 12 13 0=8 1=1 6=768
HardSwish                hswish_0                 1 1 13 14 0=0.166666672 1=0.5
Slice                    split_0                  1 2 14 15 16 -23300=2,56,56 1=1
Permute                  permute_169              1 1 16 17 0=1
BinaryOp                 mul_0                    2 1 6 17 18 0=2
BinaryOp                 mul_1                    2 1 18 15 out0 0=2
"""

# The seed block's stock conversion pins both strip pools' lengths.
SEED_POOLS = """7767517
3 3
Input                    in0                      0 1 in0
Pooling                  aap_31                   1 1 in0 6 0=1 18=16 7=1 8=1
Pooling                  aap_32                   1 1 6 out0 0=1 18=1 7=1 8=16
"""

# The size-safe form: mean strip pools, no slice; and a C2f-like channel split (a Slice
# into fixed channel counts behind a convolution, not behind pooled strips).
SAFE = """7767517
6 7
Input                    in0                      0 1 in0
Split                    splitncnn_0              1 2 in0 1 2
Reduction                mean_201                 1 1 1 3 0=3 1=0 -23303=1,2 4=1 5=1
Convolution              conv_1                   1 1 2 4 0=64 1=1 6=4096
Slice                    split_0                  1 2 4 out1 5 -23300=2,32,32 1=0
BinaryOp                 mul_0                    2 1 3 5 out0 0=2
"""

# A spatial slice behind a Concat of convolutions, not of pooled strips.
CONCAT_OF_CONVS = """7767517
6 7
Input                    in0                      0 1 in0
Split                    splitncnn_0              1 2 in0 1 2
Convolution              conv_1                   1 1 1 3 0=8 1=1 6=24
Convolution              conv_2                   1 1 2 4 0=8 1=1 6=24
Concat                   cat_0                    2 1 3 4 5 0=1
Slice                    split_0                  1 2 5 out0 out1 -23300=2,16,16 1=1
"""


def test_parse_param_reads_layers_and_blobs() -> None:
    layers = ncnn.parse_param(STOCK)
    assert len(layers) == 12
    assert layers[8].type == "Slice" and layers[8].outputs == ["15", "16"]
    assert layers[8].params == {"-23300": "2,56,56", "1": "1"}
    assert ncnn.input_blobs(layers) == ["in0"]
    assert ncnn.output_blobs(layers) == ["out0"]
    assert ncnn.output_blobs(ncnn.parse_param(SAFE)) == ["out0", "out1"]
    assert ncnn.layer_counts(layers)["BinaryOp"] == 2


def test_parse_param_refuses_other_text() -> None:
    with pytest.raises(BadInputError, match="not an ncnn param file"):
        ncnn.parse_param("ir_version: 8\n")
    with pytest.raises(BadInputError, match="malformed"):
        ncnn.parse_param("7767517\n1 1\nInput in0 0 x\n")


def test_baked_sizes_names_the_stock_slice_and_pinned_pools() -> None:
    assert ncnn.baked_sizes(ncnn.parse_param(STOCK)) == ["split_0: Slice into fixed sizes [56, 56]"]
    found = ncnn.baked_sizes(ncnn.parse_param(SEED_POOLS))
    assert [line.split(":")[0] for line in found] == ["aap_31", "aap_32"]


def test_baked_sizes_names_an_interp_to_a_fixed_size() -> None:
    pinned = "7767517\n2 2\nInput in0 0 1 in0\nInterp up 1 1 in0 out0 0=2 3=32 4=32 6=0\n"
    assert ncnn.baked_sizes(ncnn.parse_param(pinned)) == ["up: Interp to a fixed size 32x32"]
    scaled = "7767517\n2 2\nInput in0 0 1 in0\nInterp up 1 1 in0 out0 0=2 1=2.0 2=2.0\n"
    assert ncnn.baked_sizes(ncnn.parse_param(scaled)) == []


def test_baked_sizes_passes_a_size_safe_model_and_a_channel_split() -> None:
    assert ncnn.baked_sizes(ncnn.parse_param(SAFE)) == []
    assert ncnn.baked_sizes(ncnn.parse_param(CONCAT_OF_CONVS)) == []


def test_stem_and_files() -> None:
    assert ncnn.stem_of(Path("a/m.ncnn.param")) == Path("a/m")
    assert ncnn.stem_of(Path("a/m.ncnn.bin")) == Path("a/m")
    assert ncnn.stem_of(Path("a/m")) == Path("a/m")
    assert ncnn.files_of(Path("a/m")) == (Path("a/m.ncnn.param"), Path("a/m.ncnn.bin"))


# Two chained multiplies by constants, not by gates computed from x.
SCALED_TWICE = """7767517
5 5
Input                    in0                      0 1 in0
MemoryData               scale_0                  0 1 1 0=1 1=1 2=8
MemoryData               scale_1                  0 1 2 0=1 1=1 2=8
BinaryOp                 mul_0                    2 1 in0 1 3 0=2
BinaryOp                 mul_1                    2 1 3 2 out0 0=2
"""


def test_ca_blocks_reads_the_block_before_its_split_copies() -> None:
    assert ncnn.ca_blocks(ncnn.parse_param(STOCK)) == [ncnn.BlockBlobs("in0", "out0")]


def test_ca_blocks_skips_multiplies_by_other_blobs_and_lone_ones() -> None:
    assert ncnn.ca_blocks(ncnn.parse_param(SCALED_TWICE)) == []
    assert ncnn.ca_blocks(ncnn.parse_param(SAFE)) == []
    added = STOCK.replace("out0 0=2", "out0 0=0")
    assert ncnn.ca_blocks(ncnn.parse_param(added)) == []
