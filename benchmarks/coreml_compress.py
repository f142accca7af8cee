"""Core ML weight compression: package size and parity per mode (issue 13).

Runs ``ca-export coreml`` (fp16 ML program, iOS16) on one model without compression and
with each ``--compress`` mode, and prints per mode: package size (and its ratio to the
uncompressed package), the exact gate (the package against the model's copy holding its
decompressed weights: evaluator rel err, and in fp32 arithmetic), and the lossy figures
(that copy against the fp32 model in PyTorch: rel err, cosine, top-1 agreement) on the
gate's three seeded inputs. These figures set the weight-format rows of
``ca_export/verify/tolerances.py``, so the script measures them unjudged: those rows are
replaced by ones that pass anything while it runs ("passed" is then the exact gates'
verdict), and every package is written and sized.

``--ca-ablation`` instead converts once and, per mode, compresses every large weight or
every large weight outside the CA blocks, and prints package size and the lossy figures
only (no evaluator run): what keeping the CA gate convs uncompressed is worth.

    python -m benchmarks.coreml_compress --model mobilenetv2_ca --size 224
    python -m benchmarks.coreml_compress --model seed_ca --size 32
    python -m benchmarks.coreml_compress --model mobilenetv2_ca --size 224 --ca-ablation
"""

from __future__ import annotations

import tempfile
import warnings
from argparse import ArgumentParser
from pathlib import Path
from typing import Any
from unittest import mock

from ca_export.export import coreml as coreml_export
from ca_export.export.coreml_compress import MODES, compress
from ca_export.pipeline.common import Stages, quiet
from ca_export.pipeline.coreml import CoreMLJob, export_coreml
from ca_export.report import ExportReport
from ca_export.tracing import example_input
from ca_export.verify.mil.compressed import compressed_copy, weight_loss
from ca_export.verify.mil.program import MilProgram, load_program
from ca_export.verify.tolerances import TOLERANCES, Tolerance

UNJUDGED = {
    key: Tolerance(rel=float("inf"), cosine=-1.0) for key in TOLERANCES if "-weights" in key[0]
}


def measure(model: str, size: int, mode: str | None, folder: Path) -> dict[str, Any]:
    """One export's size and figures (the package is written only if every gate passed)."""
    path = folder / f"{model}_{mode or 'fp16'}.mlpackage"
    job = CoreMLJob(model, path, input_shape=(1, 3, size, size), compress=mode, min_target="iOS16")
    with warnings.catch_warnings(), mock.patch.dict(TOLERANCES, UNJUDGED):
        warnings.simplefilter("ignore")
        report = export_coreml(job)
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    data = report.to_dict()
    checks = data["checks"]
    mil = checks.get("mil_parity", {})
    loss = checks.get("compressed_weights", {})
    return {
        "mode": mode or "none",
        "passed": report.passed,
        "bytes": sum(p.stat().st_size for p in files) if files else None,
        "constexpr": checks.get("compression", {}).get("constexpr_ops", {}),
        "exact_rel": data["parity"].get("max_rel_err") if data["parity"]["ran"] else None,
        "exact_reason": mil.get("reason"),
        "fp32_rel": mil.get("fp32_arithmetic", {}).get("rel_err"),
        "loss_rel": loss.get("max_rel_err"),
        "loss_cosine": loss.get("min_cosine"),
        "loss_top1": loss.get("min_top1"),
    }


def ablation(model: str, size: int, modes: list[str], folder: Path) -> None:
    """Per mode: size and lossy figures with and without the CA blocks' weights compressed."""
    shape = (1, 3, size, size)
    job = CoreMLJob(model, folder / "x.mlpackage", input_shape=shape, min_target="iOS16")
    report = ExportReport(model, "bench", "coreml", list(shape), False, True, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = job.prepare(Stages(quiet), report)
        spec = job.input_spec(prepared.traced.input_names[0])
        blocks = coreml_export.tag(prepared.program, [b.module for b in prepared.blocks])
        names = prepared.traced.output_names
        converted = coreml_export.convert(prepared.program, spec, job.target, names)
        owned = set(coreml_export.owners(converted, blocks))
    inputs = [(seed, example_input(shape, seed)) for seed in (1, 2, 3)]
    print(f"{model} at {size}x{size}, fp16 ML program, iOS16, {len(owned)} MIL values in CA blocks")
    print("| mode | CA weights | MB | weights in PyTorch vs fp32: rel err | cosine | top-1 |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        for label, keep in (("compressed", set()), ("kept", owned)):
            path = folder / f"{mode}_{label}.mlpackage"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coreml_export.save(compress(converted, mode, keep), path)
            program = load_program(path)
            assert isinstance(program, MilProgram)
            weights = compressed_copy(program, prepared.module, shape, prepared.program)
            assert weights is not None
            gate = weight_loss(weights, prepared.module, inputs, names)
            top1 = [c.top1 for case in gate.cases for c in case.comparisons if c.top1 is not None]
            mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
            print(
                f"| {mode} | {label} | {mb:.2f} | {gate.worst('rel_err'):.3g} "
                f"| {gate.min_cosine:.6f} | {_fmt(min(top1, default=None), '.2f')} |"
            )


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    """Export, measure and print one row per mode."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2_ca")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--ca-ablation", action="store_true")
    args = parser.parse_args()
    if args.ca_ablation:
        with tempfile.TemporaryDirectory() as tmp:
            ablation(args.model, args.size, args.modes.split(","), Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args.model, args.size, None, Path(tmp))]
        rows += [measure(args.model, args.size, m, Path(tmp)) for m in args.modes.split(",")]
    base = rows[0]["bytes"]
    print(f"{args.model} at {args.size}x{args.size}, fp16 ML program, iOS16, 3 seeded inputs")
    print(
        "| mode | passed | MB | vs fp16 | constexpr ops | exact rel err (fp16 / fp32 arith) "
        "| weights in PyTorch vs fp32: rel err | cosine | top-1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["bytes"] / base if r["bytes"] and base else None
        exact = _fmt(r["exact_rel"], ".3g") if r["exact_reason"] is None else "not verified"
        print(
            f"| {r['mode']} | {r['passed']} | {_fmt(r['bytes'] and r['bytes'] / 1e6, '.2f')} "
            f"| {_fmt(ratio, '.3f')} | {r['constexpr'] or '-'} | {exact} / "
            f"{_fmt(r['fp32_rel'], '.3g')} | {_fmt(r['loss_rel'], '.3g')} "
            f"| {_fmt(r['loss_cosine'], '.6f')} | {_fmt(r['loss_top1'], '.2f')} |"
        )
        if r["exact_reason"]:
            print(f"  {r['mode']}: {r['exact_reason']}")


if __name__ == "__main__":
    main()
