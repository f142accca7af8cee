"""A neural-network ``.mlmodel`` evaluated layer by layer from its spec, in NumPy.

coremltools has no route from a neural network back to MIL (its NN backend only goes
from MIL to layers), and it predicts on macOS only, so the layers are read from the
spec and run here: each layer type the converter emits for CA networks has a small
function in ``LAYERS`` that reuses the MIL op implementations of ``ops`` (convolution,
pooling, resizing share their semantics). Weights are read as stored (fp32, or fp16
from ``--precision fp16``) and every value is held in fp32, as a neural network
computes. An image input's ``scaler`` preprocessing is applied first; a classifier's
probabilities become a dict by class label. A layer type or parameter value not
implemented raises ``Unsupported``, so the model is reported as not verified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ca_export.verify.mil import ops
from ca_export.verify.mil.ops import Unsupported

Array = np.ndarray
KINDS = ("neuralNetwork", "neuralNetworkClassifier")


def _weights(params: Any, shape: tuple[int, ...] | None = None) -> Array:
    """A ``WeightParams`` as float32 (fp16 weights widened), reshaped to ``shape``."""
    if params.floatValue:
        values = np.asarray(params.floatValue, dtype=np.float32)
    elif params.float16Value:
        values = np.frombuffer(params.float16Value, dtype=np.float16).astype(np.float32)
    else:
        raise Unsupported("quantized or empty weights")
    return values.reshape(shape) if shape is not None else values


def _padding(params: Any) -> dict[str, Any]:
    """MIL ``pad_type``/``pad`` arguments for a convolution's or pooling's padding."""
    conv = params.DESCRIPTOR.name == "ConvolutionLayerParams"
    kind = params.WhichOneof("ConvolutionPaddingType" if conv else "PoolingPaddingType")
    if kind == "valid":
        amounts = params.valid.paddingAmounts.borderAmounts
        pads = [v for a in amounts for v in (a.startEdgeSize, a.endEdgeSize)] or [0, 0, 0, 0]
        return {"pad_type": "custom", "pad": pads}
    if kind == "same":
        heavy = params.same.asymmetryMode
        return {"pad_type": "same" if heavy == params.same.BOTTOM_RIGHT_HEAVY else "same_lower"}
    raise Unsupported(f"padding {kind}")


def convolution(params: Any, x: Array) -> Array:
    """Convolution with groups, strides, dilations and valid/same padding."""
    if params.isDeconvolution:
        raise Unsupported("deconvolution")
    kernel = [int(k) for k in params.kernelSize] or [3, 3]
    shape = (params.outputChannels, params.kernelChannels, *kernel)
    bias = _weights(params.bias) if params.hasBias else None
    strides = [int(s) for s in params.stride] or [1, 1]
    return ops.conv(
        x,
        _weights(params.weights, shape),
        bias,
        strides=strides,
        dilations=[int(d) for d in params.dilationFactor] or [1, 1],
        groups=max(1, params.nGroups),
        **_padding(params),
    )


def pooling(params: Any, x: Array) -> Array:
    """Average or max pooling, windowed or global."""
    kind = params.PoolingType.Name(params.type)
    if kind not in ("AVERAGE", "MAX"):
        raise Unsupported(f"{kind} pooling")
    if params.globalPooling:
        reduce = np.mean if kind == "AVERAGE" else np.max
        pooled: np.ndarray = reduce(x, axis=(-2, -1), keepdims=True)
        return pooled
    kernel = [int(k) for k in params.kernelSize] or [3, 3]
    strides = [int(s) for s in params.stride] or [1, 1]
    padding = _padding(params)
    if kind == "MAX":
        return ops.max_pool(x, kernel, strides, **padding)
    return ops.avg_pool(
        x, kernel, strides, exclude_padding_from_average=params.avgPoolExcludePadding, **padding
    )


ACTIVATIONS: dict[str, Callable[[Any, Array], Array]] = {
    "ReLU": lambda p, x: ops.relu(x),
    "sigmoid": lambda p, x: ops.sigmoid(x),
    "tanh": lambda p, x: ops.tanh(x),
    "sigmoidHard": lambda p, x: ops.sigmoid_hard(x, p.alpha, p.beta),
    "thresholdedReLU": lambda p, x: ops.thresholded_relu(x, p.alpha),
    "leakyReLU": lambda p, x: ops.leaky_relu(x, p.alpha),
    "linear": lambda p, x: p.alpha * x + p.beta,
}


def activation(params: Any, x: Array) -> Array:
    """The activations CA networks use."""
    kind = params.WhichOneof("NonlinearityType")
    if kind not in ACTIVATIONS:
        raise Unsupported(f"activation {kind}")
    return ACTIVATIONS[kind](getattr(params, kind), x)


def inner_product(params: Any, x: Array) -> Array:
    """x @ W.T + b over the last axis (or the channel axis of an N,C,1,1 input)."""
    weight = _weights(params.weights, (params.outputChannels, params.inputChannels))
    bias = _weights(params.bias) if params.hasBias else None
    if x.ndim == 4 and x.shape[-2:] == (1, 1):
        return ops.linear(x[..., 0, 0], weight, bias)[..., None, None]
    return ops.linear(x, weight, bias)


def batched_matmul(params: Any, *xs: Array) -> Array:
    """A @ B of two inputs, or x @ W + b with stored weights."""
    if len(xs) == 2:
        return ops.matmul(xs[0], xs[1], params.transposeA, params.transposeB)
    if params.transposeA:
        raise Unsupported("batchedMatmul with weights and transposeA")
    shape = (params.weightMatrixFirstDimension, params.weightMatrixSecondDimension)
    out: np.ndarray = np.matmul(xs[0], _weights(params.weights, shape))
    return out + _weights(params.bias) if params.hasBias else out


def upsample(params: Any, x: Array) -> Array:
    """Nearest or bilinear upsampling by integer factors."""
    if any(params.fractionalScalingFactor):
        raise Unsupported("upsample by fractional factors")
    height, width = (int(s) for s in params.scalingFactor) if params.scalingFactor else (1, 1)
    if params.mode == params.NN:
        return ops.upsample_nearest_neighbor(x, height, width)
    mode = params.LinearUpsampleMode.Name(params.linearUpsampleMode)
    if mode == "DEFAULT":
        raise Unsupported("upsample in DEFAULT linear mode")
    return ops.upsample_bilinear(x, height, width, align_corners=mode == "ALIGN_CORNERS_TRUE")


def _alpha(op: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    """An elementwise layer of its inputs, or of one input and ``alpha``."""

    def layer(params: Any, *xs: Array) -> Array:
        if len(xs) == 1:
            return op(xs[0], np.float32(params.alpha))
        out = xs[0]
        for x in xs[1:]:
            out = op(out, x)
        return out

    return layer


def _concat(params: Any, *xs: Array) -> Array:
    if params.sequenceConcat:
        raise Unsupported("sequence concat")
    return np.concatenate(xs, axis=-3)


def _softmax(params: Any, x: Array) -> Array:
    return ops.softmax(x, axis=-3)


LAYERS: dict[str, Callable[..., Array]] = {
    "convolution": convolution,
    "pooling": pooling,
    "activation": activation,
    "innerProduct": inner_product,
    "batchedMatmul": batched_matmul,
    "upsample": upsample,
    "add": _alpha(np.add),
    "multiply": _alpha(np.multiply),
    "addBroadcastable": lambda p, x, y: np.add(x, y),
    "subtractBroadcastable": lambda p, x, y: np.subtract(x, y),
    "multiplyBroadcastable": lambda p, x, y: np.multiply(x, y),
    "divideBroadcastable": lambda p, x, y: np.true_divide(x, y),
    "clip": lambda p, x: ops.clip(x, p.minVal, p.maxVal),
    "concat": _concat,
    "concatND": lambda p, *xs: np.concatenate(xs, axis=p.axis),
    "squeeze": lambda p, x: np.squeeze(x) if p.squeezeAll else np.squeeze(x, tuple(p.axes)),
    "expandDims": lambda p, x: np.expand_dims(x, tuple(p.axes)),
    "reshapeStatic": lambda p, x: np.reshape(x, [int(d) for d in p.targetShape]),
    "flattenTo2D": lambda p, x: x.reshape(int(np.prod(x.shape[: p.axis])), -1),
    "softmax": _softmax,
    "softmaxND": lambda p, x: ops.softmax(x, axis=p.axis),
}


@dataclass
class NetworkProgram:
    """A saved neural network: its spec, evaluated with ``run``."""

    path: Path
    spec: Any
    unit = "layer"

    @property
    def network(self) -> Any:
        """The ``NeuralNetwork`` (or classifier) message."""
        return getattr(self.spec, self.spec.WhichOneof("Type"))

    @property
    def input_names(self) -> list[str]:
        """The model's input names, in order."""
        return [f.name for f in self.spec.description.input]

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in order."""
        return [f.name for f in self.spec.description.output]

    @property
    def compared_outputs(self) -> list[str]:
        """The outputs compared with PyTorch: all but a classifier's label."""
        label = self.spec.description.predictedFeatureName if self.classes else None
        return [name for name in self.output_names if name != label]

    @property
    def classes(self) -> list[Any]:
        """A classifier's class labels in its score order (empty for other networks)."""
        if self.spec.WhichOneof("Type") != "neuralNetworkClassifier":
            return []
        labels = self.network.WhichOneof("ClassLabels")
        return list(getattr(self.network, labels).vector) if labels else []

    @property
    def dtype(self) -> str:
        """ "float16" if weights are stored in fp16 (it still computes in fp32), else "float32"."""
        for layer in self.network.layers:
            params = getattr(layer, layer.WhichOneof("layer"))
            weights = getattr(params, "weights", None)
            if weights is not None and weights.float16Value:
                return "float16"
        return "float32"

    def uncovered(self) -> list[str]:
        """The layer types the evaluator does not implement, sorted."""
        return sorted({layer.WhichOneof("layer") for layer in self.network.layers} - set(LAYERS))

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The compared outputs on the one input ``x``, as float32; a classifier's as a row."""
        gaps = self.uncovered()
        if gaps:
            raise Unsupported("layer " + ", ".join(gaps))
        name = self.input_names[0]
        blobs: dict[str, Array] = {name: self._preprocess(name, np.asarray(x, np.float32))}
        for layer in self.network.layers:
            kind = layer.WhichOneof("layer")
            inputs = [blobs[i] for i in layer.input]
            try:
                out = LAYERS[kind](getattr(layer, kind), *inputs)
            except Unsupported as err:
                raise Unsupported(f"layer {kind} ({err})") from None
            blobs[layer.output[0]] = np.asarray(out, dtype=np.float32)
        if self.classes:
            probs = self.spec.description.predictedProbabilitiesName
            source = self.network.labelProbabilityLayerName or probs
            return [blobs[source].reshape(1, -1)]
        return [blobs[name] for name in self.compared_outputs]

    def _preprocess(self, name: str, x: Array) -> Array:
        """An image input's ``scaler``: channelScale * pixel + bias per R, G, B channel."""
        for step in self.network.preprocessing:
            if step.featureName not in ("", name):
                continue
            kind = step.WhichOneof("preprocessor")
            if kind != "scaler":
                raise Unsupported(f"{kind} preprocessing")
            scaler = step.scaler
            bias = np.array([scaler.redBias, scaler.greenBias, scaler.blueBias], np.float32)
            scaled: np.ndarray = x * np.float32(scaler.channelScale) + bias.reshape(1, 3, 1, 1)
            return scaled
        return x
