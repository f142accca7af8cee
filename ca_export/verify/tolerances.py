"""The one table of parity tolerances, keyed by (dtype, backend).

**The exact rows answer one question**: is the artifact as close to the exact answer
as PyTorch fp32 is, within a stated factor? The exact answer is the model's float64
run; the artifact's error from it is judged per output slice (``verify.metrics``: per
sample and channel of a map, per sample and column of a ``[N, boxes, 5 + classes]``
detector output, per sample of logits), so a box in pixels and a class probability
each meet a bound on their own scale. A slice's bound is the largest of:

- ``rel`` times the slice's RMS: rounding in another summation order, measured on the
  samples (MobileNetV2-CA at 224: a rewritten block differs from the original by up to
  2e-5 of its RMS, ONNX Runtime's logits by up to 6e-5; XNNPACK's by 8e-5) and far
  below a wrong rewrite (a swapped or mis-broadcast gate: 1e-1 and more);
- ``noise_factor`` (4) times PyTorch fp32's own error from float64 on that slice (the
  larger of two fp32 runs whose convolutions sum in other orders, ``verify.parity.
  fp32_runs``), at most ``ceiling`` times the slice's RMS: an ill-conditioned network is
  allowed what its own fp32 runs do, and no more than 4 times it;
- ``floor`` times the whole output's RMS: 8 ulps of the artifact's precision there.

The ceiling's figure: the largest slice noise measured (PyTorch fp32 against float64,
max abs error over the slice's RMS, 3 seeded inputs) is 8.4e-4 on ``yolov5_ca`` at 320
(a w/h column), 1.1e-4 at 64; 4.2e-4 on ``mobilenetv2_ca`` at 64, 4.1e-5 at 224; 7.3e-6
on ``ca_segnet`` at 64. 2e-3 is 2.4 times the largest, and an artifact's own error sits
near the noise (ONNX Runtime on ``yolov5_ca`` at 320: margin 0.34 under the capped bound).

Where the artifact is within ``rel`` of PyTorch fp32 on every slice, the float64 run
is not needed and not made. Where no PyTorch model exists (``optimize``), the noise is
the input file's: the file run with ONNX Runtime's optimisations off, and on inputs
moved 2 ulps per element.

Why not one number per output: on the YOLOv5-style sample (``yolov5_ca``, 320x320,
max |y| about 1000, output RMS 30) PyTorch fp32 itself is up to 0.031 off float64 in
the w/h columns and ONNX Runtime 0.032 (its error from PyTorch fp32, 0.045, is 1.5e-3
of the output's RMS; at 2x3x96x128 it reached 3.9e-3, past the old whole-output
ceiling of 2e-3, and a correct dynamic export failed), while the objectness and class
columns carry errors of 2e-5, which a whole-output bound would let a wrong export hide
in.
Per slice, measured with ``ca-export ... yolov5_ca --input-shape 1,3,320,320`` (3
seeded inputs, worst margin = error over bound): ``onnx`` 0.34, ``onnx --dynamic``
0.44 (5 inputs at 3 sizes), ``onnx --opset 13`` 0.34, stripped ``best.pt`` 0.33,
``executorch`` 0.47, ``coreml --precision fp32`` (NumPy MIL evaluator) 0.28,
``optimize`` of the export script's opset-12 file 0.73. The mutation suite
(``tests/verify/test_mutants.py``, ``python -m benchmarks.mutant_margins``) shows where wrong
exports sit.

The fp32 LiteRT row (``litert-xnnpack``: the .tflite in ``ai_edge_litert`` with XNNPACK)
is ExecuTorch's: the same XNNPACK kernels. Measured with ``ca-export litert
mobilenetv2_ca`` at 224 (3 seeded inputs): worst margin 0.23 (max abs err 4.3e-5).
The ``("float32", "ncnn")`` row is ONNX Runtime's: ncnn with fp32 weights, fp16 storage
off and Winograd convolutions off (``verify.ncnn_runtime``) puts every correct form of
``mobilenetv2_ca`` within 2e-5 of the largest logit at 224, 160x256 and 288x288
(``python -m benchmarks.ncnn_forms``). The smallest noise factor that passes every slice
over ``rel`` (seeds 1-3, against float64) is 0 for ``yolo_ca`` at 224 (size-safe and fixed
size) and 1.85 for ``yolov5_ca`` at 320 (fixed size); with Winograd on, as phones run
fp32, it is 4.46, 3.45 and 3.47, and ``yolo_ca`` at 160x96 failed at factor 8 (margin
1.21): that is ncnn's arithmetic on a correct conversion, so the exact gate runs without
it. The export gate's worst margins are then 0.87 (``yolo_ca`` at 224, size-safe), 0.74
(``yolo_ca`` at 160x96, size-safe) and 0.46 (``yolov5_ca`` at 320, fixed size), and every
mutant of ``tests/verify/test_ncnn_mutants.py`` fails the ncnn gate. With one fp32 run as
the noise, ``yolov5_ca`` at 224 (fixed size) failed at margin 1.04 (a class column 4.55
times that run's noise; the stock pnnx conversion sat at 0.94): one run is one sample of
the noise. With the larger of two (``fp32_runs``) it passes at 0.75, and 320 at 0.44.
The per-block gate inside ncnn (each CA block fed PyTorch's input to it) judges under
the same row: its worst block margin over every sample, in both forms and the stock
conversion, is 0.125 (``mobilenext_ca``, fixed size), and a block whose gate conv lost
its sigmoid fails. Core ML's macOS prediction gate takes the two runs' noise as the
other exact gates do; it cannot run here, so it has no figure of its own.
The ``("fp16", "ncnn")`` row takes the ``fp16`` row's bounds unchanged.

The fp32 Core ML row allows 1e-3 (three times ONNX Runtime's), as Core ML may run fp32
programs on the GPU, whose kernels sum in other orders. fp16 rows: an fp16 artifact
rounds every activation to 11 bits (about 5e-4 relative each), which deep networks
amplify to about 1e-2 of the RMS; the noise is then PyTorch fp16's error from fp32.
Where that reaches the signal (``Comparison.slack`` >= 1; ``yolov5_ca`` at 320: its
own fp16 run is 52 px off in w), ``verify.mil.parity`` says "not verified"; an fp16
Core ML export then passes only on its fp32-arithmetic check (``verify.mil.
fp32_arithmetic``), which proves the program's ops with the fp32 row.

The ``<format>-weights`` rows judge what compressed Core ML weights alone do: a copy of
the model holding the package's decompressed weights against the fp32 model, both in
PyTorch (``verify.mil.compressed``; the package itself is held to the exact rows above
against that copy). They are lossy bounds, not noise bounds, and carry no noise factor.
Set from ``python -m benchmarks.coreml_compress --model seed_ca --size 32`` (three seeded
inputs; every mode but palette4 keeps its top-1 there): the worst rel err measured, 0.123
int8, 0.081 palette8, 0.351 palette6, times about 1.5; the cosine bound is the one the rel
bound implies (1 - rel**2 / 2). palette8 keeps int8's bound, palette4 allows 0.8, where
seed_ca (1.7, cosine 0.56, top-1 lost) falls apart and fails. The calibrated-random
``mobilenetv2_ca`` at 224 fails every row: int8 weights alone move its logits by 0.62 of
their RMS (cosine 0.979) and change its top-1 on all three inputs (rounding its weights
to fp16 already moves them by 0.14).

The ``fp16`` and ``int8`` rows judge a lossy conversion of a gated fp32 ONNX model
(``ca-export onnx --precision``) against the fp32 PyTorch model (for ``optimize``,
against the input file in ONNX Runtime), per output, over every gate input at once
(``verify.lossy``): ``top1`` is the smallest share of inputs whose top-1 class agrees,
``top1_in_top5`` the smallest share whose reference top-1 class is among the artifact's
top five (both for class-score outputs, 2-D [N, K]); ``cosine`` the smallest cosine and
``rel`` the largest max-abs error over the reference's RMS, on any input. The bounds are
fp16: top-1 7/8, cosine 0.99; int8: 6/8, 0.90; ``rel`` is set from the cosine bound:
an error at cosine c has an RMS of about sqrt(2 (1 - c)) of the signal's, and the largest
of 1000 logits' errors is about 3.5 times the RMS. A model that falls
apart in int8 (a clipping calibration, a saturated gate) gives cosines of 0.5 and below
and rel errors above 3.

**Re-derived on a trained network.** The rows above were set on calibrated-random
samples, where int8 or palettised weights move the logits by a large share of their RMS.
``digits_ca`` is trained (``sample_models.train_digits``); ``python -m
benchmarks.trained_lossy`` judges each lossy form against PyTorch fp32 on its 360 held-out
digits (smallest cosine, largest rel err, top-1 agreement; top-1 accuracy 98.33 % fp32):

==========================  ==========  ===========  ===============  ==========
form                        min cosine  max rel err  top-1 agreement  accuracy %
==========================  ==========  ===========  ===============  ==========
ONNX fp16                   1.00000     0.0038       360/360          98.33
ONNX int8 (32 digits cal.)  0.99803     0.267        360/360          98.33
Core ML int8 weights        0.99972     0.051        360/360          98.33
Core ML palette8 weights    0.99988     0.030        360/360          98.33
Core ML palette6 weights    0.99583     0.167        360/360          98.33
Core ML palette4 weights    0.92712     0.78         352/360          96.11
==========================  ==========  ===========  ===============  ==========

Every trained figure is inside its row, by 6x (int8 rel err) or more except palette4,
which the row admits at 0.78 of its 0.8 while the accuracy gate (``verify.accuracy``,
default 1 point) fails its 2.2-point drop. The failing side, on the same network: int8
calibrated on the digits scaled by 0.85, 0.7 or 0.5 (a clipping calibration) gives
cosines 0.67, 0.19 and -0.04, rel errors 2.1, 5.2 and 8.9, and 68 %, 13 % and 12 %
accuracy (``tests/cli/test_accuracy_cli.py``), all failing the int8 row. So no row is
widened or narrowed: each sits between what a trained network does and what a broken
conversion of it does; a row narrowed to the trained figures would fail the random
samples, whose losses are real for their weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ca_export.errors import BadInputError

FP32_FLOOR = 8 * float(np.finfo(np.float32).eps)
"""Eight fp32 ulps at the output's RMS: rounding in any order, whatever the slice."""
FP16_FLOOR = 8 * float(np.finfo(np.float16).eps)
"""Eight fp16 ulps at the output's RMS."""


@dataclass(frozen=True)
class Tolerance:
    """The bounds of one (dtype, backend) row.

    Exact rows (``cosine`` None) bound each output slice's max abs error
    (``verify.metrics``) by the largest of: ``rel`` times the slice's RMS;
    ``noise_factor`` times the reference computation's own error on that slice, itself
    at most ``ceiling`` times the slice's RMS (a model whose runs disagree by more, a
    random op or a float64 run that goes elsewhere, cannot pass on its own noise); and
    ``floor`` times the whole output's RMS (rounding at the output's own scale).
    Lossy rows (``cosine`` set) bound the whole output's max abs error over its RMS by
    ``rel`` and its cosine from below; ``top1`` and ``top1_in_top5`` are the smallest
    shares of inputs whose top-1 class agrees, and whose reference top-1 class is in the
    artifact's top five. ``atol``, set only by a user, bounds the max abs error as well;
    ``user`` says the user set ``rel`` or ``atol``.
    """

    rel: float
    noise_factor: float = 0.0
    ceiling: float | None = None
    floor: float = 0.0
    cosine: float | None = None
    atol: float | None = None
    top1: float | None = None
    top1_in_top5: float | None = None
    user: bool = False

    def bounds(self, scales: np.ndarray, noises: np.ndarray, scale: float) -> np.ndarray:
        """Each slice's bound on its max abs error, from its RMS (``scales``), its noise
        (``noises``, the alike runs' max abs error) and the whole output's RMS."""
        widened = self.noise_factor * noises
        if self.ceiling is not None:
            widened = np.minimum(widened, self.ceiling * scales)
        return np.maximum(np.maximum(self.rel * scales, widened), self.floor * scale)


_FP32: dict[str, Any] = {"noise_factor": 4.0, "floor": FP32_FLOOR}

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "torch"): Tolerance(rel=1e-4, floor=FP32_FLOOR),
    ("float32", "onnxruntime-cpu"): Tolerance(rel=3e-4, ceiling=2e-3, **_FP32),
    ("float32", "executorch-xnnpack"): Tolerance(rel=3e-4, ceiling=2e-3, **_FP32),
    ("float32", "litert-xnnpack"): Tolerance(rel=3e-4, ceiling=2e-3, **_FP32),
    ("float32", "ncnn"): Tolerance(rel=3e-4, ceiling=2e-3, **_FP32),
    ("float32", "coreml"): Tolerance(rel=1e-3, ceiling=3e-3, **_FP32),
    ("float16", "onnxruntime-cpu"): Tolerance(
        rel=2e-2, noise_factor=4.0, ceiling=1e-1, floor=FP16_FLOOR
    ),
    ("float16", "coreml"): Tolerance(rel=2e-2, noise_factor=4.0, floor=FP16_FLOOR),
    ("fp16", "onnxruntime-cpu"): Tolerance(rel=0.5, cosine=0.99, top1=7 / 8, top1_in_top5=1.0),
    ("fp16", "ncnn"): Tolerance(rel=0.5, cosine=0.99, top1=7 / 8, top1_in_top5=1.0),
    ("int8", "onnxruntime-cpu"): Tolerance(rel=1.6, cosine=0.90, top1=6 / 8, top1_in_top5=7 / 8),
    ("fp16", "litert-xnnpack"): Tolerance(rel=0.5, cosine=0.99, top1=7 / 8, top1_in_top5=1.0),
    ("int8", "litert-xnnpack"): Tolerance(rel=1.6, cosine=0.90, top1=6 / 8, top1_in_top5=7 / 8),
    ("int8-weights", "coreml"): Tolerance(rel=0.2, cosine=0.98),
    ("palette8-weights", "coreml"): Tolerance(rel=0.2, cosine=0.98),
    ("palette6-weights", "coreml"): Tolerance(rel=0.5, cosine=0.875),
    ("palette4-weights", "coreml"): Tolerance(rel=0.8, cosine=0.68),
}


def tolerance(dtype: str, backend: str) -> Tolerance:
    """The tolerance for comparing a ``dtype`` artifact run on ``backend`` with PyTorch."""
    try:
        return TOLERANCES[(dtype, backend)]
    except KeyError:
        raise BadInputError(f"no parity tolerance defined for {dtype} on {backend}") from None


def user_tolerance(base: Tolerance, rtol: float | None, atol: float | None) -> Tolerance:
    """``base`` with the user's ``--rtol`` and ``--atol``. ``rtol`` replaces ``rel`` (of each
    slice's RMS on exact rows, of the output's on lossy ones) and turns off the widening
    by noise; a lossy row keeps its top-1 bounds and takes the cosine ``rtol`` implies."""
    if rtol is None and atol is None:
        return base
    if rtol is None:
        return replace(base, atol=atol, user=True)
    cosine = None if base.cosine is None else min(base.cosine, 1 - rtol * rtol / 2)
    return replace(base, rel=rtol, cosine=cosine, noise_factor=0.0, atol=atol, user=True)
