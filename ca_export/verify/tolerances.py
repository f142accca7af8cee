"""The one table of parity tolerances, keyed by (dtype, backend).

Errors are measured relative to the reference signal's scale (its RMS), so one
tolerance fits logits, feature maps and segmentation maps alike. The fp32 figures sit
a few times above rounding measured on the sample models (MobileNetV2-CA at 224: a
rewritten block differs from the original by up to 2e-5 of its RMS, since a 1x1 conv
over 960 channels sums in another order; ONNX Runtime's logits by up to 6e-5) and far
below what a wrong rewrite gives (a swapped or mis-broadcast gate: 1e-1 and more).
MobileNetV2-CA at 64x64 is noisier on its own: PyTorch fp32 differs from fp64 by up
to 5e-4 of the RMS, and ONNX Runtime by 6e-4; ``noise_factor`` covers that case.
fp16 artifacts round every activation to 11 bits (about 5e-4 relative each), which
deep networks amplify to about 1e-2 of the RMS.
The Core ML rows are not measured here (coremltools predicts on macOS only): fp16 takes
the fp16 figures above, since an fp16 ML program also rounds every activation to 11 bits;
fp32 allows 1e-3, three times ONNX Runtime's, as Core ML may run fp32 programs on the
GPU, whose kernels sum in other orders, still two decades below a wrong rewrite.
ExecuTorch's XNNPACK fp32 row equals ONNX Runtime's: XNNPACK sums convolutions in its
own order, as ORT does; measured on MobileNetV2-CA at 224 (``ca-export executorch``,
three seeded inputs) its logits differ from PyTorch by up to 8e-5 of the RMS.
The Core ML fp16 row has no ceiling: where the model's own fp16 error reaches its
signal, ``verify.mil.parity`` reports "not verified" instead of a verdict.

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
issue 13's (fp16: top-1 7/8, cosine 0.99; int8: 6/8, 0.90); ``rel`` is set from the
cosine bound: an error at cosine c has an RMS of about sqrt(2 (1 - c)) of the signal's,
and the largest of 1000 logits' errors is about 3.5 times the RMS. A model that falls
apart in int8 (a clipping calibration, a saturated gate) gives cosines of 0.5 and below
and rel errors above 3.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ca_export.errors import BadInputError


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed max-abs error over the reference's RMS, and smallest cosine.

    ``noise_factor`` widens ``rel`` to that many times the model's own fp32 noise
    (PyTorch fp32 against PyTorch fp64 on the same input) where that noise is larger:
    a deep network at a small input size can be that ill-conditioned by itself. The
    widening stops at ``ceiling``: a model whose runs disagree by more (a random op, a
    float64 run that goes elsewhere) cannot pass on its own noise.
    ``atol``, set only by a user, bounds the max abs error as well.
    ``top1`` and ``top1_in_top5`` (lossy rows only) are the smallest shares of inputs whose
    top-1 class agrees, and whose reference top-1 class is in the artifact's top five.
    """

    rel: float
    cosine: float
    noise_factor: float = 0.0
    ceiling: float | None = None
    atol: float | None = None
    top1: float | None = None
    top1_in_top5: float | None = None

    def allowed(self, noise: float) -> tuple[float, float]:
        """The (rel, cosine) bounds given the model's own noise on this input."""
        rel = max(self.rel, self.noise_factor * noise)
        if self.ceiling is not None:
            rel = min(rel, max(self.ceiling, self.rel))
        return rel, min(self.cosine, 1 - rel * rel / 2)


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "torch"): Tolerance(rel=1e-4, cosine=1 - 1e-8),
    ("float32", "onnxruntime-cpu"): Tolerance(3e-4, 1 - 1e-7, noise_factor=4.0, ceiling=2e-3),
    ("float32", "executorch-xnnpack"): Tolerance(3e-4, 1 - 1e-7, noise_factor=4.0, ceiling=2e-3),
    ("float16", "onnxruntime-cpu"): Tolerance(2e-2, 1 - 1e-4, noise_factor=4.0, ceiling=1e-1),
    ("float16", "coreml"): Tolerance(rel=2e-2, cosine=1 - 1e-4, noise_factor=4.0),
    ("float32", "coreml"): Tolerance(1e-3, 1 - 1e-6, noise_factor=4.0, ceiling=3e-3),
    ("fp16", "onnxruntime-cpu"): Tolerance(rel=0.5, cosine=0.99, top1=7 / 8, top1_in_top5=1.0),
    ("int8", "onnxruntime-cpu"): Tolerance(rel=1.6, cosine=0.90, top1=6 / 8, top1_in_top5=7 / 8),
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
    """``base`` with the user's ``--rtol`` (relative to the output's RMS) and ``--atol``; a
    lossy row keeps its top-1 bounds."""
    if rtol is None and atol is None:
        return base
    rel = base.rel if rtol is None else rtol
    cosine = base.cosine if rtol is None else min(base.cosine, 1 - rel * rel / 2)
    factor = 0.0 if rtol is not None else base.noise_factor
    return replace(base, rel=rel, cosine=cosine, noise_factor=factor, atol=atol)
