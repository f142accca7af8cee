"""The files a YOLOv5 fork leaves on disk, written for ``yolov5_ca`` by our own code: the
stripped ``best.pt`` of training and the ONNX file of the export script (TorchScript-based
exporter, opset 12)."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from sample_models.yolov5 import Detect


def write_stripped_checkpoint(model: nn.Module, path: Path) -> Path:
    """Save ``model`` as YOLOv5 leaves ``best.pt`` after stripping the optimizer.

    A deep copy in fp16 without gradients under ``model``; ``ema``, ``updates``,
    ``optimizer`` and ``best_fitness`` are None and ``epoch`` is -1. Unpickling it imports
    ``sample_models.yolov5``.
    """
    half = copy.deepcopy(model).half()
    for p in half.parameters():
        p.requires_grad = False
    checkpoint = {
        "epoch": -1,
        "best_fitness": None,
        "model": half,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "opt": {"imgsz": 320, "epochs": 300, "batch_size": 16},
        "date": "2024-01-01T00:00:00",
    }
    torch.save(checkpoint, path)
    return path


def export_like_yolov5(
    model: nn.Module, path: Path, shape: tuple[int, ...], opset: int = 12
) -> Path:
    """Write the ONNX file YOLOv5's export script writes for ``model`` at ``shape``.

    On a deep copy: the ``Detect`` head gets ``export = True``, two dry runs on zeros fill the
    grid caches (so the file holds them as constants), then ``torch.onnx.export`` with the
    TorchScript exporter, constant folding, input ``images`` and output ``output0``; the
    strides and class names go into the metadata, as YOLOv5 writes them.
    """
    model = copy.deepcopy(model).eval()
    detect = next(m for m in model.modules() if isinstance(m, Detect))
    detect.export = True
    metadata = {
        "stride": int(detect.stride.max()),
        "names": {i: f"class{i}" for i in range(detect.nc)},
    }
    im = torch.zeros(shape)
    with torch.no_grad():
        for _ in range(2):
            model(im)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (im,),
            path,
            verbose=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=["images"],
            output_names=["output0"],
            dynamo=False,
        )
    exported = onnx.load(path)
    onnx.checker.check_model(exported)
    for key, value in metadata.items():
        meta = exported.metadata_props.add()
        meta.key, meta.value = key, str(value)
    onnx.save(exported, path)
    return path
