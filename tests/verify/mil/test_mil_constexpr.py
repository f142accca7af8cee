"""The evaluator's weight-decompression ops against references written element by element.

Each op (``ca_export.verify.mil.ops``) is checked against a loop over every element that
applies the op's documented formula, and against coremltools' own decompression
(``decompress`` of the op's class); the bit packing of iOS16 palettes against a packer
written here bit by bit and against coremltools' ``pack_elements_into_bits``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ca_export.export.coreml import coremltools
from ca_export.verify.mil.ops import (
    Unsupported,
    constexpr_affine_dequantize,
    constexpr_blockwise_shift_scale,
    constexpr_lut_to_dense,
)

coremltools()
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16  # noqa: E402
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18  # noqa: E402
from coremltools.optimize import _utils as optimize_utils  # noqa: E402

RNG = np.random.default_rng(13)


def _fp16(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float16)


def _int8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


@pytest.mark.parametrize("axis", [0, 1])
def test_affine_dequantize_per_channel(axis: int) -> None:
    data = _int8(5, 4, 3, 3)
    scale, zero = _fp16(data.shape[axis]), _int8(data.shape[axis])
    expected = np.empty(data.shape, np.float32)
    for idx in np.ndindex(*data.shape):
        c = idx[axis]
        expected[idx] = np.float32(scale[c]) * (int(data[idx]) - int(zero[c]))
    got = constexpr_affine_dequantize(data, zero, scale, axis)
    np.testing.assert_array_equal(got, expected)
    theirs = ios16.constexpr_affine_dequantize.decompress(data, zero, scale, axis)
    np.testing.assert_array_equal(got.astype(np.float16), theirs.astype(np.float16))


def test_affine_dequantize_scalar_scale() -> None:
    data = _int8(4, 6)
    got = constexpr_affine_dequantize(data, np.int8(3), np.float16(0.5), 0)
    np.testing.assert_array_equal(got, 0.5 * (data.astype(np.float32) - 3))


@pytest.mark.parametrize("offset", [False, True])
def test_blockwise_shift_scale(offset: bool) -> None:
    data = _int8(8, 6, 3, 3)
    scale = _fp16(4, 2, 1, 1)
    shift = _int8(4, 2, 1, 1) if offset else None
    blocks = (2, 3, 3, 3)
    expected = np.empty(data.shape, np.float32)
    for idx in np.ndindex(*data.shape):
        block = tuple(i // b for i, b in zip(idx, blocks, strict=True))
        zero = int(shift[block]) if shift is not None else 0
        expected[idx] = np.float32(scale[block]) * (int(data[idx]) - zero)
    got = constexpr_blockwise_shift_scale(data, scale, shift)
    np.testing.assert_array_equal(got, expected)
    theirs = ios18.constexpr_blockwise_shift_scale.decompress(data, scale, shift)
    np.testing.assert_array_equal(got.astype(np.float16), theirs.astype(np.float16))


def test_blockwise_scale_that_does_not_divide_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="scale of shape"):
        constexpr_blockwise_shift_scale(_int8(6, 4), _fp16(4, 1))


def _pack(indices: np.ndarray, nbits: int) -> np.ndarray:
    """Pack n-bit fields into bytes, least significant bit first, as the iOS16 op documents."""
    bits = [(int(value) >> b) & 1 for value in indices.ravel() for b in range(nbits)]
    bits += [0] * (-len(bits) % 8)
    return np.array(
        [sum(bit << k for k, bit in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)],
        dtype=np.uint8,
    )


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_lut_to_dense_ios16_packed(nbits: int) -> None:
    shape = (5, 7)
    indices = RNG.integers(0, 1 << nbits, size=shape).astype(np.uint8)
    lut = _fp16(1 << nbits)
    packed = _pack(indices, nbits)
    np.testing.assert_array_equal(packed, optimize_utils.pack_elements_into_bits(indices, nbits))
    got = constexpr_lut_to_dense(packed, lut, shape=np.array(shape, np.uint32))
    expected = np.array([lut[i] for i in indices.ravel()]).reshape(shape)
    np.testing.assert_array_equal(got, expected)
    theirs = ios16.constexpr_lut_to_dense.decompress(lut, packed, np.array(shape))
    np.testing.assert_array_equal(got, theirs)


def test_lut_to_dense_ios16_too_few_bits_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="index bits"):
        constexpr_lut_to_dense(np.zeros(3, np.uint8), _fp16(16), shape=np.array([4, 4]))


def test_lut_to_dense_ios18_per_group() -> None:
    indices = RNG.integers(0, 16, size=(6, 4, 3, 3)).astype(np.uint8)
    lut = _fp16(2, 1, 1, 1, 16, 1)
    expected = np.empty(indices.shape, np.float16)
    for idx in np.ndindex(*indices.shape):
        expected[idx] = lut[idx[0] // 3, 0, 0, 0, indices[idx], 0]
    got = constexpr_lut_to_dense(indices, lut)
    np.testing.assert_array_equal(got, expected)
    theirs = ios18.constexpr_lut_to_dense.decompress(indices, lut, None)
    np.testing.assert_array_equal(got, theirs)


def test_lut_to_dense_ios18_vector_palette_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="lookup table of shape"):
        constexpr_lut_to_dense(np.zeros((4, 2), np.uint8), _fp16(1, 1, 4, 2), vector_axis=0)
