"""NumPy reference implementations of MIL ops, one small function per op, in ``OPS``.

Each function takes the op's inputs by their MIL parameter names, with MIL's defaults,
and returns one array (or a list, for ops with several outputs; ``classify`` gives a
label and a dict of scores). Float inputs arrive
as float32 (the evaluator widens fp16 values); the evaluator rounds each output to the
dtype the program declares. A parameter value a function does not implement raises
``Unsupported``, so the op is reported as not verified rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

Array = npt.NDArray[Any]
"""An op's value, of the dtype its program declares: floats arrive as float32, ints and
bools as they are (shape arithmetic, indices, masks)."""


class Unsupported(Exception):
    """An op, or one of its parameter values, that the evaluator does not implement."""


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.atleast_1d(value)]


# Activations and other elementwise ops ------------------------------------------------


def relu(x: Array) -> Array:
    """max(x, 0)."""
    return np.maximum(x, 0)


def relu6(x: Array) -> Array:
    """min(max(x, 0), 6)."""
    return np.clip(x, 0, 6)


def clip(x: Array, alpha: Any, beta: Any) -> Array:
    """min(max(x, alpha), beta)."""
    return np.asarray(np.minimum(np.maximum(x, alpha), beta))


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x))."""
    return 0.5 * (np.tanh(0.5 * x) + 1)


def sigmoid_hard(x: Array, alpha: Any = 0.2, beta: Any = 0.5) -> Array:
    """min(max(alpha * x + beta, 0), 1)."""
    return np.asarray(np.clip(alpha * x + beta, 0, 1))


def silu(x: Array) -> Array:
    """x * sigmoid(x)."""
    return x * sigmoid(x)


def thresholded_relu(x: Array, alpha: Any = 1.0) -> Array:
    """x where x >= alpha, else 0."""
    return np.where(x >= alpha, x, 0).astype(x.dtype)


def leaky_relu(x: Array, alpha: Any = 0.01) -> Array:
    """x where x >= 0, else alpha * x."""
    return np.where(x >= 0, x, alpha * x).astype(x.dtype)


def tanh(x: Array) -> Array:
    """tanh(x)."""
    return np.tanh(x)


def exp(x: Array) -> Array:
    """exp(x)."""
    return np.exp(x)


def sqrt(x: Array) -> Array:
    """sqrt(x)."""
    return np.sqrt(x)


def rsqrt(x: Array, epsilon: Any = 1e-12) -> Array:
    """1 / sqrt(x + epsilon)."""
    return np.asarray(1 / np.sqrt(x + epsilon))


def gelu(x: Array, mode: str = "EXACT") -> Array:
    """GELU, exact (erf) or with the tanh or sigmoid approximation."""
    if mode == "EXACT":
        erf = np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2))
        return np.asarray(0.5 * x * (1 + erf), dtype=x.dtype)
    if mode == "TANH_APPROXIMATION":
        return np.asarray(0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))))
    if mode == "SIGMOID_APPROXIMATION":
        return x * sigmoid(1.702 * x)
    raise Unsupported(f"gelu mode {mode}")


def softmax(x: Array, axis: int = -1) -> Array:
    """exp(x) / sum(exp(x)) along ``axis``."""
    shifted = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
    return np.asarray(shifted / np.sum(shifted, axis=int(axis), keepdims=True))


def add(x: Array, y: Array) -> Array:
    """x + y, broadcast."""
    return np.add(x, y)


def sub(x: Array, y: Array) -> Array:
    """x - y, broadcast."""
    return np.subtract(x, y)


def mul(x: Array, y: Array) -> Array:
    """x * y, broadcast."""
    return np.multiply(x, y)


def real_div(x: Array, y: Array) -> Array:
    """x / y, broadcast."""
    return np.true_divide(x, y)


def maximum(x: Array, y: Array) -> Array:
    """max(x, y), broadcast."""
    return np.maximum(x, y)


def minimum(x: Array, y: Array) -> Array:
    """min(x, y), broadcast."""
    return np.minimum(x, y)


def pow(x: Array, y: Array) -> Array:
    """x ** y, broadcast."""
    return np.power(x, y)


def cast(x: Array, dtype: str) -> Array:
    """x in ``dtype`` (the evaluator rounds to the declared output type)."""
    return np.asarray(x)


def identity(x: Array) -> Array:
    """x."""
    return x


# Linear algebra, convolution, normalisation ------------------------------------------


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """x @ weight.T + bias."""
    out = np.matmul(x, np.swapaxes(weight, -1, -2))
    return np.asarray(out if bias is None else out + bias)


def matmul(x: Array, y: Array, transpose_x: bool = False, transpose_y: bool = False) -> Array:
    """x @ y, either side transposed over its last two axes first."""
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.asarray(np.matmul(x, y))


def _pads(
    size: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pad_type: str,
    pad: Any,
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis for MIL's pad types."""
    if pad_type == "valid":
        return [(0, 0)] * len(size)
    if pad_type == "custom":
        values = _ints(pad)
        return [(values[2 * i], values[2 * i + 1]) for i in range(len(size))]
    if pad_type in ("same", "same_lower"):
        pads = []
        for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            low = total // 2 if pad_type == "same" else total - total // 2
            pads.append((low, total - low))
        return pads
    raise Unsupported(f"pad_type {pad_type}")


def _windows(
    x: Array, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> Array:
    """Sliding windows over the two spatial axes: (N, C, Ho, Wo, kh, kw)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    view = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def conv(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    dilations: Any = None,
    groups: Any = 1,
) -> Array:
    """2-D convolution (N, C, H, W) with groups, strides, dilations and MIL padding."""
    if x.ndim != 4:
        raise Unsupported(f"conv over {x.ndim - 2} spatial axes")
    kernel = list(weight.shape[2:])
    strides = _ints(strides) if strides is not None else [1, 1]
    dilations = _ints(dilations) if dilations is not None else [1, 1]
    pads = _pads(x.shape[2:], kernel, strides, dilations, pad_type, pad)
    padded = np.pad(x, [(0, 0), (0, 0), *pads])
    windows = _windows(padded, kernel, strides, dilations)
    n, c, ho, wo = windows.shape[:4]
    g = int(groups)
    out = np.einsum(
        "ngchwij,gocij->ngohw",
        windows.reshape(n, g, c // g, ho, wo, *kernel),
        weight.reshape(g, weight.shape[0] // g, *weight.shape[1:]),
        optimize=True,
    ).reshape(n, weight.shape[0], ho, wo)
    return np.asarray(out if bias is None else out + bias.reshape(1, -1, 1, 1))


def batch_norm(
    x: Array,
    mean: Array,
    variance: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    epsilon: Any = 1e-5,
) -> Array:
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta over axis 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if gamma is not None:
        out = out * gamma.reshape(shape)
    return np.asarray(out if beta is None else out + beta.reshape(shape))


def layer_norm(
    x: Array,
    axes: Any = None,
    gamma: Array | None = None,
    beta: Array | None = None,
    epsilon: Any = 1e-5,
) -> Array:
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over ``axes``."""
    axes = tuple(_ints(axes)) if axes is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    if gamma is not None:
        out = out * gamma
    return np.asarray(out if beta is None else out + beta)


# Pooling and reductions ----------------------------------------------------------------


def _pool(
    x: Array,
    kernel_sizes: Any,
    strides: Any,
    pad_type: str,
    pad: Any,
    ceil_mode: bool,
    fill: float,
) -> tuple[Array, list[tuple[int, int]]]:
    """Windows over the padded input, and the padding used."""
    if ceil_mode:
        raise Unsupported("pooling with ceil_mode")
    if x.ndim != 4:
        raise Unsupported(f"pooling over {x.ndim - 2} spatial axes")
    kernel = _ints(kernel_sizes)
    steps = _ints(strides) if strides is not None else [1, 1]
    pads = _pads(x.shape[2:], kernel, steps, [1, 1], pad_type, pad)
    padded = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    return _windows(padded, kernel, steps, [1, 1]), pads


def avg_pool(
    x: Array,
    kernel_sizes: Any,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    exclude_padding_from_average: bool = False,
    ceil_mode: bool = False,
) -> Array:
    """Mean over each window; padding counts unless ``exclude_padding_from_average``."""
    windows, pads = _pool(x, kernel_sizes, strides, pad_type, pad, bool(ceil_mode), 0.0)
    total = windows.sum(axis=(-2, -1))
    if not exclude_padding_from_average:
        return np.asarray(total / (windows.shape[-1] * windows.shape[-2]))
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counts, _ = _pool(ones, kernel_sizes, strides, "custom", _flat(pads), False, 0.0)
    return np.asarray(total / counts.sum(axis=(-2, -1)))


def _flat(pads: list[tuple[int, int]]) -> list[int]:
    return [p for pair in pads for p in pair]


def max_pool(
    x: Array,
    kernel_sizes: Any,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    ceil_mode: bool = False,
) -> Array:
    """Max over each window; padding never wins."""
    windows, _ = _pool(x, kernel_sizes, strides, pad_type, pad, bool(ceil_mode), -np.inf)
    return np.asarray(windows.max(axis=(-2, -1)))


def _axes(axes: Any) -> tuple[int, ...] | None:
    return None if axes is None else tuple(_ints(axes))


def reduce_mean(x: Array, axes: Any = None, keep_dims: bool = False) -> Array:
    """Mean over ``axes`` (all if None)."""
    return np.asarray(np.mean(x, axis=_axes(axes), keepdims=bool(keep_dims)))


def reduce_sum(x: Array, axes: Any = None, keep_dims: bool = False) -> Array:
    """Sum over ``axes`` (all if None)."""
    return np.sum(x, axis=_axes(axes), keepdims=bool(keep_dims))


def reduce_max(x: Array, axes: Any = None, keep_dims: bool = False) -> Array:
    """Max over ``axes`` (all if None)."""
    return np.asarray(np.max(x, axis=_axes(axes), keepdims=bool(keep_dims)))


# Shapes ----------------------------------------------------------------------------------


def concat(values: Sequence[Array], axis: Any, interleave: bool = False) -> Array:
    """Values joined along ``axis``."""
    if interleave:
        raise Unsupported("concat with interleave")
    return np.concatenate(list(values), axis=int(axis))


def split(x: Array, axis: Any, num_splits: Any = None, split_sizes: Any = None) -> list[Array]:
    """x cut along ``axis`` into ``split_sizes`` or ``num_splits`` equal parts."""
    if split_sizes is not None:
        cuts = np.cumsum(_ints(split_sizes))[:-1]
        return np.split(x, cuts, axis=int(axis))
    return np.split(x, int(num_splits), axis=int(axis))


def slice_by_index(
    x: Array,
    begin: Any,
    end: Any,
    stride: Any = None,
    begin_mask: Any = None,
    end_mask: Any = None,
    squeeze_mask: Any = None,
) -> Array:
    """NumPy slicing ``x[begin:end:stride]`` per axis, with MIL's masks."""
    rank = x.ndim
    begins, ends = _ints(begin), _ints(end)
    steps = _ints(stride) if stride is not None else [1] * rank
    no_begin = list(np.atleast_1d(begin_mask)) if begin_mask is not None else [False] * rank
    no_end = list(np.atleast_1d(end_mask)) if end_mask is not None else [False] * rank
    squeeze = list(np.atleast_1d(squeeze_mask)) if squeeze_mask is not None else [False] * rank
    index: list[Any] = []
    for i in range(rank):
        if squeeze[i]:
            index.append(begins[i])
        else:
            index.append(
                slice(None if no_begin[i] else begins[i], None if no_end[i] else ends[i], steps[i])
            )
    return np.asarray(x[tuple(index)])


def slice_by_size(x: Array, begin: Any, size: Any) -> Array:
    """``x[begin : begin + size]`` per axis; size -1 runs to the end."""
    index = tuple(
        slice(b, None if s == -1 else b + s) for b, s in zip(_ints(begin), _ints(size), strict=True)
    )
    return x[index]


def transpose(x: Array, perm: Any) -> Array:
    """Axes permuted by ``perm``."""
    return np.transpose(x, _ints(perm))


def reshape(x: Array, shape: Any) -> Array:
    """x with ``shape``; -1 is inferred, 0 copies x's size on that axis (same rank only)."""
    target = _ints(shape)
    if 0 in target:
        if len(target) != x.ndim:
            raise Unsupported("reshape with 0 in a shape of another rank")
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return np.reshape(x, target)


def squeeze(x: Array, axes: Any = None) -> Array:
    """x without the size-1 ``axes`` (all size-1 axes if None)."""
    return np.squeeze(x, axis=_axes(axes))


def expand_dims(x: Array, axes: Any) -> Array:
    """x with size-1 axes inserted at ``axes``."""
    return np.expand_dims(x, axis=tuple(_ints(axes)))


def tile(x: Array, reps: Any) -> Array:
    """x repeated ``reps`` times along each axis."""
    return np.tile(x, _ints(reps))


def pad(x: Array, pad: Any, mode: str = "constant", constant_val: Any = 0.0) -> Array:
    """x padded on its last axes by (before, after) pairs in ``pad``."""
    values = _ints(pad)
    pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    widths = [(0, 0)] * (x.ndim - len(pairs)) + pairs
    if mode == "constant":
        return np.pad(x, widths, constant_values=constant_val)
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise Unsupported(f"pad mode {mode}")


# Resizing ----------------------------------------------------------------------------------


def _grid(size_in: int, size_out: int, mode: str) -> Array:
    """Sampling positions on the input axis for MIL's bilinear sampling modes."""
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            points = np.full(1, (size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            points = i * (size_in - 1) / (size_out - 1)
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        points = i * spacing + 0.5 * spacing - 0.5
    elif mode == "DEFAULT":
        points = i * ((size_in - size_in / size_out) / (size_out - 1)) if size_out > 1 else i
    elif mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        points = 0.5 * delta + i * delta
    elif mode == "ASYMMETRIC":
        points = i * size_in / size_out
    else:
        raise Unsupported(f"bilinear sampling mode {mode}")
    return np.asarray(np.clip(points, 0, size_in - 1))


def _interpolate(x: Array, axis: int, points: Array) -> Array:
    """Linear interpolation of ``x`` along ``axis`` at fractional ``points``."""
    low = np.floor(points).astype(int)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    frac = (points - low).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.asarray(np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac)


def _bilinear(x: Array, height: int, width: int, mode: str) -> Array:
    out = _interpolate(x, -2, _grid(x.shape[-2], height, mode))
    return _interpolate(out, -1, _grid(x.shape[-1], width, mode))


def upsample_bilinear(
    x: Array,
    scale_factor_height: Any = 1,
    scale_factor_width: Any = 1,
    align_corners: bool = True,
    half_pixel_centers: bool | None = None,
) -> Array:
    """Bilinear upsampling by scale factors; the grid uses the output size (MIL's rule)."""
    height = math.floor(float(scale_factor_height) * x.shape[-2])
    width = math.floor(float(scale_factor_width) * x.shape[-1])
    half = (not align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    if align_corners and half:
        raise Unsupported("upsample_bilinear with align_corners and half_pixel_centers")
    mode = "STRICT_ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS" if half else "ASYMMETRIC"
    return _bilinear(x, height, width, mode)


def resize_bilinear(
    x: Array,
    target_size_height: Any = 1,
    target_size_width: Any = 1,
    sampling_mode: str = "DEFAULT",
) -> Array:
    """Bilinear resizing to a target size in one of MIL's sampling modes."""
    return _bilinear(x, int(target_size_height), int(target_size_width), str(sampling_mode))


def _nearest(x: Array, height: int, width: int) -> Array:
    rows = np.floor(np.arange(height) * x.shape[-2] / height).astype(int)
    cols = np.floor(np.arange(width) * x.shape[-1] / width).astype(int)
    return np.asarray(np.take(np.take(x, rows, axis=-2), cols, axis=-1))


def upsample_nearest_neighbor(
    x: Array, scale_factor_height: Any = 1, scale_factor_width: Any = 1
) -> Array:
    """Nearest-neighbour upsampling: output pixel i reads input pixel floor(i * in / out)."""
    height = math.floor(float(scale_factor_height) * x.shape[-2])
    width = math.floor(float(scale_factor_width) * x.shape[-1])
    return _nearest(x, height, width)


def resize_nearest_neighbor(
    x: Array, target_size_height: Any = 1, target_size_width: Any = 1
) -> Array:
    """Nearest-neighbour resizing to a target size."""
    return _nearest(x, int(target_size_height), int(target_size_width))


# Compressed weights (coremltools.optimize) ------------------------------------------------


def constexpr_affine_dequantize(
    quantized_data: Array, zero_point: Array, scale: Array, axis: Any
) -> Array:
    """scale * (quantized_data - zero_point); a vector scale or zero point runs along ``axis``."""
    data = np.asarray(quantized_data, dtype=np.float32)
    shape = [1] * data.ndim
    shape[int(axis)] = -1

    def along(value: Array) -> Array:
        value = np.asarray(value, dtype=np.float32)
        return value.reshape(shape) if value.ndim == 1 else value

    return along(scale) * (data - along(zero_point))


def _blocks(data_shape: Sequence[int], table_shape: Sequence[int], what: str) -> list[int]:
    """The block size along each axis: data size over table size, which must divide it."""
    if len(table_shape) != len(data_shape) or any(
        t == 0 or d % t for d, t in zip(data_shape, table_shape, strict=True)
    ):
        raise Unsupported(f"{what} of shape {tuple(table_shape)} over data {tuple(data_shape)}")
    return [d // t for d, t in zip(data_shape, table_shape, strict=True)]


def constexpr_blockwise_shift_scale(
    data: Array, scale: Array, offset: Array | None = None
) -> Array:
    """scale[block] * (data - offset[block]), blocks of data.shape / scale.shape elements."""
    values = np.asarray(data, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    blocks = _blocks(values.shape, scale.shape, "scale")
    split = [n for pair in zip(scale.shape, blocks, strict=True) for n in pair]
    spread = [n for pair in zip(scale.shape, [1] * len(blocks), strict=True) for n in pair]
    grouped = values.reshape(split)
    if offset is not None:
        grouped = grouped - np.asarray(offset, dtype=np.float32).reshape(spread)
    return (grouped * scale.reshape(spread)).reshape(values.shape)


def constexpr_lut_to_dense(
    indices: Array, lut: Array, shape: Any = None, vector_axis: Any = None
) -> Array:
    """Each index replaced by its entry in the lookup table (palettized weights).

    iOS16 form (``shape`` given): one table of 2**n entries, ``indices`` n-bit fields packed
    into bytes from the least significant bit up, row-major. iOS18 form: ``indices`` has the
    output's shape, and ``lut`` (rank + 2) holds one table per block of
    ``indices.shape / lut.shape[:rank]`` elements; only scalar tables (last axis 1).
    """
    table = np.asarray(lut)
    if shape is not None:
        size = int(np.prod(_ints(shape)))
        nbits = int(table.size).bit_length() - 1
        if table.ndim != 1 or 1 << nbits != table.size:
            raise Unsupported(f"lookup table of {table.size} entries")
        bits = np.unpackbits(np.asarray(indices, dtype=np.uint8), bitorder="little")
        if bits.size < size * nbits:
            raise Unsupported(f"{bits.size} index bits for {size} values of {nbits} bits")
        fields = bits[: size * nbits].reshape(size, nbits).astype(np.int64)
        return table[fields @ (1 << np.arange(nbits))].reshape(_ints(shape))
    index = np.asarray(indices).astype(np.int64)
    if table.ndim != index.ndim + 2 or table.shape[-1] != 1:
        raise Unsupported(f"lookup table of shape {table.shape} over indices {index.shape}")
    blocks = _blocks(index.shape, table.shape[: index.ndim], "lookup table")
    groups = np.ix_(*(np.arange(n) // b for n, b in zip(index.shape, blocks, strict=True)))
    key = (*groups, index)
    return np.asarray(table[..., 0][key])


# Classifier output ---------------------------------------------------------------------------


def classify(probabilities: Array, classes: Any) -> list[Any]:
    """The class of the largest score, and every class's score, in the order of ``classes``."""
    labels = list(getattr(classes, "ls", classes))
    scores = np.asarray(probabilities).reshape(-1)
    if scores.size != len(labels):
        raise Unsupported(f"classify of {scores.size} scores over {len(labels)} classes")
    return [labels[int(np.argmax(scores))], dict(zip(labels, scores.tolist(), strict=True))]


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        relu,
        relu6,
        clip,
        sigmoid,
        sigmoid_hard,
        silu,
        thresholded_relu,
        leaky_relu,
        tanh,
        exp,
        sqrt,
        rsqrt,
        gelu,
        softmax,
        add,
        sub,
        mul,
        real_div,
        maximum,
        minimum,
        pow,
        cast,
        identity,
        linear,
        matmul,
        conv,
        batch_norm,
        layer_norm,
        avg_pool,
        max_pool,
        reduce_mean,
        reduce_sum,
        reduce_max,
        concat,
        split,
        slice_by_index,
        slice_by_size,
        transpose,
        reshape,
        squeeze,
        expand_dims,
        tile,
        pad,
        upsample_bilinear,
        resize_bilinear,
        upsample_nearest_neighbor,
        resize_nearest_neighbor,
        classify,
        constexpr_affine_dequantize,
        constexpr_blockwise_shift_scale,
        constexpr_lut_to_dense,
    )
}
"""Every op the evaluator implements, by MIL op type (``const`` is read, not computed)."""
