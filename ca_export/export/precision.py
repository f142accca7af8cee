"""fp16 and int8 ONNX from a gated fp32 model, with maintained ONNX Runtime tools.

- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` (ships with
  onnxruntime) with ``keep_io_types``: weights and compute in fp16, the graph's inputs
  and outputs fp32, with one Cast at each end. Writing our own converter would repeat
  its handling of initializers, value infos and ops without fp16 kernels. It appends the
  input's Cast at the end of the node list, which the ONNX checker rejects, so the
  result is sorted topologically (``onnx_ir``'s ``Graph.sort``).
- int8: ``onnxruntime.quantization.quantize_static``: QDQ format, per-channel symmetric
  int8 weights, asymmetric uint8 activations, MinMax calibration. ORT's
  ``quant_pre_process`` is not run: our models are already simplified and shape-inferred,
  and its optimiser splits ``HardSwish`` into ``HardSigmoid`` + ``Mul`` (measured no
  better: cosine 0.884 against 0.890 without it).

What stays fp32 in CA blocks: nothing, by measurement. MobileNetV2-CA at 224x224,
calibrated on 16 seeded inputs (seeds 100-115), judged on seeds 1-8 against PyTorch fp32
(smallest cosine, top-1 agreement), with the block's ops kept in fp32 by
``nodes_to_exclude`` (the pipeline calibrates on seeds 101-116: 0.885 and 3/8 for the
default, so differences of 0.01 between rows are within what the calibration set moves):

=====================================================  ======  =====
kept fp32                                              cosine  top-1
=====================================================  ======  =====
nothing (the default)                                  0.897   1/8
Sigmoid gates                                          0.897   1/8
Sigmoid + gate MatMul + gate Mul                       0.827   0/8
gate MatMul + gate Mul                                 0.859   2/8
shared stem (conv1 + h_swish)                          0.874   2/8
shared stem + gate convs                               0.892   3/8
gate convs + Sigmoid + MatMul + Mul                    0.878   2/8
every op of every CA block                             0.894   1/8
=====================================================  ======  =====

ORT's QDQ quantizer leaves ``Sigmoid``/``HardSigmoid`` unquantized anyway (they run in
fp32 between a DequantizeLinear and a QuantizeLinear), so a gate cannot saturate from
8-bit rounding of its own output. Keeping more of the block in fp32 adds
Quantize/Dequantize pairs at its edges and is no better. The loss is the backbone's
weight rounding, which CA blocks amplify: rounding only the conv weights to int8 in
PyTorch gives cosine 0.925 (only CA convs 0.980, only backbone convs 0.928, only the
first three stages 0.941); 16-bit activations with int8 weights give 0.926; MobileNetV2
without CA, same weights scheme, gives 0.984 and 6/8. ``keep_fp32`` keeps the nodes of
named modules (module scopes the exporter records) in fp32, for such layers.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from ca_export.errors import BadInputError
from ca_export.export.onnx import scopes
from ca_export.inputs import IMAGE_SUFFIXES, load_inputs

PRECISIONS = ("fp32", "fp16", "int8")
SEEDED_CALIBRATION = tuple(range(101, 117))
"""Seeds of the inputs int8 is calibrated on when no calibration folder is given (the gates
use seeds 1-8, so calibration and gate inputs differ)."""
ARRAY_SUFFIXES = {".npy", ".npz"}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with fp16 weights and compute, its inputs and outputs kept fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fp16: onnx.ModelProto = convert_float_to_float16(copy, keep_io_types=True)
    converted = ir.from_proto(fp16)
    converted.graph.sort()
    return ir.to_proto(converted)


class _Calibration:
    """The calibration inputs as ``quantize_static`` reads them: one feed per ``get_next``,
    None at the end. ORT's ``CalibrationDataReader`` takes any class with ``get_next`` as
    its subclass (``__subclasshook__``), so this one need not derive from it."""

    def __init__(self, input_name: str, calibration: Sequence[np.ndarray]) -> None:
        self.feeds = iter([{input_name: x} for x in calibration])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next feed, or None when every input was given."""
        return next(self.feeds, None)


def to_int8(
    model: onnx.ModelProto,
    input_name: str,
    calibration: Sequence[np.ndarray],
    keep_fp32: Sequence[str] = (),
) -> onnx.ModelProto:
    """The model quantized to int8 (QDQ, per-channel weights), calibrated on ``calibration``.

    Nodes whose module scope is one of ``keep_fp32`` (or inside one) stay fp32. The
    quantizer is given a copy: it moves the tensors of a model it is given to external data.
    """
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )

    excluded = fp32_nodes(model, keep_fp32)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    with tempfile.TemporaryDirectory(prefix="ca-export-int8-") as folder, _quiet_logging():
        out = Path(folder) / "int8.onnx"
        quantize_static(
            copy,
            out,
            _Calibration(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
        )
        return onnx.load(out)


def fp32_nodes(model: onnx.ModelProto, modules: Sequence[str]) -> list[str]:
    """Names of the nodes emitted under any of ``modules``; a module no node has is bad input."""
    found = {m: [n.name for n in model.graph.node if m in scopes(n)] for m in modules}
    missing = [m for m, names in found.items() if not names]
    if missing:
        raise BadInputError(
            f"--keep-fp32: no ONNX node belongs to module {missing[0]!r}; "
            "give a module path as `inspect` and the report name them (e.g. features.0)"
        )
    return sorted({name for names in found.values() for name in names})


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Keep the quantizer's root-logger advice (run pre-processing) out of the output."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def seeded_calibration(input_shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """Seeded standard-normal inputs to calibrate on when no folder is given."""
    from ca_export.tracing import example_input

    return [(f"seed {s}", example_input(input_shape, s).numpy()) for s in SEEDED_CALIBRATION]


def calibration_inputs(
    folder: Path, input_shape: tuple[int, int, int, int]
) -> list[tuple[str, np.ndarray]]:
    """One 1,C,H,W input per image or array row in ``folder`` (sorted by name).

    Images are resized and ImageNet-normalised as ``verify`` does; ``.npy``/``.npz``
    arrays (N,C,H,W or C,H,W) must match the input's C, H and W. Other files are ignored.
    """
    if not folder.is_dir():
        raise BadInputError(f"--calibration {str(folder)!r} is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | ARRAY_SUFFIXES
    )
    if not files:
        raise BadInputError(f"--calibration {str(folder)!r} holds no images or .npy/.npz arrays")
    samples = []
    for name, array in load_inputs(files, input_shape):
        if array.shape[1:] != tuple(input_shape[1:]):
            expected = ",".join(map(str, input_shape[1:]))
            raise BadInputError(
                f"calibration input {name}: shape {array.shape}, expected N,{expected}"
            )
        for i in range(len(array)):
            samples.append((f"{name}[{i}]" if len(array) > 1 else name, array[i : i + 1]))
    return samples


def calibration_files(folder: Path | None) -> list[Path]:
    """The calibration files a run reads (for the output clash check)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())
