"""What lossy formats do to a trained network: ``digits_ca`` on its 360 held-out digits.

The figures behind the ``fp16``, ``int8`` and ``<format>-weights`` rows of
``ca_export/verify/tolerances.py``. Per format, against the fp32 PyTorch model, over every
held-out digit: the smallest cosine and largest max-abs error over the reference's RMS per
input (what the rows bound), top-1 agreement, and top-1 accuracy of both.

- ONNX fp16 and int8: the gated fp32 export of ``ca-export onnx``, converted as
  ``--precision`` converts it (int8 calibrated on ``sample_models/data/digits_calibration``),
  run in ONNX Runtime.
- Core ML weights: the fp16 ML program (iOS16) compressed in each ``--compress`` mode; its
  decompressed weights placed in a copy of the model, run in PyTorch
  (``verify.mil.compressed``, as the ``compressed_weights`` check does).

    python -m benchmarks.trained_lossy
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ca_export.export import coreml as coreml_export
from ca_export.export import precision as convert
from ca_export.export.coreml_compress import MODES, compress
from ca_export.pipeline.common import Stages, quiet
from ca_export.pipeline.coreml import CoreMLJob
from ca_export.pipeline.onnx import OnnxJob, export_onnx
from ca_export.report import ExportReport
from ca_export.verify.accuracy import read_eval_set
from ca_export.verify.lossy import judge
from ca_export.verify.mil.compressed import compressed_copy
from ca_export.verify.mil.program import MilProgram, load_program
from ca_export.verify.runtime import cpu_session
from ca_export.verify.tolerances import Tolerance
from sample_models import build
from sample_models.digits import CALIBRATION_DIR, EVAL_DIR, INPUT_SHAPE

UNJUDGED = Tolerance(rel=float("inf"), cosine=-1.0)


def _row(name: str, refs: np.ndarray, gots: np.ndarray, labels: np.ndarray) -> str:
    """One table row: the lossy gate's figures over every input, and accuracy."""
    gate = judge(
        [[r[None]] for r in refs],
        [[g[None]] for g in gots],
        ["logits"],
        [str(i) for i in range(len(refs))],
        name,
        "-",
        UNJUDGED,
    )
    out = gate.outputs[0]
    ref_acc = float((refs.argmax(1) == labels).mean())
    acc = float((gots.argmax(1) == labels).mean())
    return (
        f"| {name} | {out.min_cosine:.5f} | {out.max_rel_err:.3g} | {out.top1:.4f} "
        f"| {100 * ref_acc:.2f} | {100 * acc:.2f} |"
    )


def main() -> None:
    """Export, convert, run and print one row per format."""
    eval_set = read_eval_set(EVAL_DIR, INPUT_SHAPE)
    x = np.concatenate([s for _, s in eval_set.samples])
    labels = np.asarray(eval_set.labels)
    model = build("digits_ca")
    with torch.no_grad():
        refs = model(torch.from_numpy(x)).numpy()
    print(f"digits_ca, {len(x)} held-out digits, against PyTorch fp32")
    print("| format | min cosine | max rel err | top-1 agreement | fp32 top-1 % | top-1 % |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "fp32.onnx"
        export_onnx(OnnxJob("digits_ca", path, input_shape=INPUT_SHAPE))
        fp32 = onnx.load(path)
        name = fp32.graph.input[0].name
        calibration = [a for _, a in convert.calibration_inputs(CALIBRATION_DIR, INPUT_SHAPE)]
        for label, lowered in (
            ("onnx fp16", convert.to_fp16(fp32)),
            ("onnx int8", convert.to_int8(fp32, name, calibration)),
        ):
            session = cpu_session(lowered, label)
            gots = np.concatenate([session.run(None, {name: s[None]})[0] for s in x])
            print(_row(label, refs, gots, labels))
        job = CoreMLJob(
            "digits_ca", Path(tmp) / "x.mlpackage", input_shape=INPUT_SHAPE, min_target="iOS16"
        )
        report = ExportReport("digits_ca", "bench", "coreml", list(INPUT_SHAPE), False, True, 0)
        prepared = job.prepare(Stages(quiet), report)
        spec = job.input_spec(prepared.traced.input_names[0])
        names = prepared.traced.output_names
        converted = coreml_export.convert(prepared.program, spec, job.target, names)
        for mode in MODES:
            package = Path(tmp) / f"{mode}.mlpackage"
            coreml_export.save(compress(converted, mode), package)
            program = load_program(package)
            assert isinstance(program, MilProgram)
            weights = compressed_copy(program, prepared.module, INPUT_SHAPE, prepared.program)
            assert weights is not None
            with torch.no_grad():
                gots = weights.model(torch.from_numpy(x)).numpy()
            print(_row(f"coreml {mode} weights", refs, gots, labels))


if __name__ == "__main__":
    main()
