"""Every rewrite form on LiteRT with XNNPACK, and the ExecuTorch program of the same form
(issue 23).

Converts MobileNetV2 without CA, MobileNetV2-CA stock (no rewrite) and MobileNetV2-CA in
each form with litert-torch to .tflite files (``--channels-last-io`` variants with NHWC
input beside them), gates each against PyTorch (max abs error over max |ref|, one seeded
input), lowers the no-CA net and the ``xnnpack`` form to ExecuTorch .pte programs when the
executorch extra is there, then times all of them interleaved on one thread
(``ca_export.bench``, each round in a new order). Per
file: ops, TRANSPOSE (from CA blocks), XNNPACK partitions, ops outside XNNPACK, exactness,
and p50 over the no-CA net's (of the same runtime and layout) and over stock's. Ratios are
the result; absolute milliseconds depend on the machine and its load.

python -m benchmarks.litert_forms --cache /tmp/litert-bench
python -m benchmarks.litert_forms --cache /tmp/litert-bench --forms litert
"""

from __future__ import annotations

import json
import sys
import warnings
from argparse import Namespace
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import harness
from benchmarks.litert_floor import interleaved
from ca_export.export import executorch as et
from ca_export.export import litert as lt
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.rewrites import rewrite
from ca_export.tracing import example_input, trace

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"
TARGET_OVERHEAD = 0.10

VARIANTS: dict[str, tuple[str, str | None, bool]] = {
    "no-CA": (BASELINE, None, False),
    "stock": (MODEL, None, False),
    "litert": (MODEL, "litert", False),
    "onnx": (MODEL, "onnx", False),
    "resize": (MODEL, "resize", False),
    "matmul_pool": (MODEL, "matmul_pool", False),
    "no-CA nhwc": (BASELINE, None, True),
    "litert nhwc": (MODEL, "litert", True),
}
"""Name: (model, rewrite form or None for the stock program, NHWC input)."""
ALWAYS = ("no-CA", "stock", "litert", "no-CA nhwc", "litert nhwc")
"""The files every run makes: the ones the targets are measured on."""
EXECUTORCH = {"no-CA .pte": (BASELINE, None), "xnnpack .pte": (MODEL, "xnnpack")}
"""ExecuTorch programs timed beside, each in ``ca-export executorch``'s form: (model, form).
The ``litert`` form's MEAN strips would not lower into ExecuTorch's XNNPACK delegate."""


def _program(model: str, form: str | None, size: int) -> tuple[Any, torch.nn.Module, list[str]]:
    module = load_model(model).module
    traced = trace(module, (1, 3, size, size), dynamic=False)
    modules = [b.module for b in find(traced.program.graph)[0]]
    program = traced.program if form is None else rewrite(traced.program, True, form).program
    return program, module, modules


def convert(name: str, folder: Path, size: int) -> tuple[Path, dict[str, Any]]:
    """Convert one variant (reused from ``folder`` if there), inspect and gate it."""
    path, facts = folder / f"{name.replace(' ', '-')}-{size}.tflite", folder / f"{name}-{size}.json"
    if path.is_file() and facts.is_file():
        return path, json.loads(facts.read_text())
    print(f"converting {name} ...", file=sys.stderr, flush=True)
    model, form, nhwc = VARIANTS[name]
    program, module, modules = _program(model, form, size)
    x = example_input((1, 3, size, size), 0)
    buffer = lt.convert(program, x, nhwc)
    seen = lt.inspect(buffer, modules)
    with torch.no_grad():
        ref = module(x).numpy()
    got = lt.LiteRunner(buffer, nhwc).run(x.numpy())[0]
    described = {
        "ops": len(seen.ops),
        "transpose": len(seen.transposes),
        "ca_transpose": sum(o.block is not None for o in seen.transposes),
        "partitions": seen.partitions,
        "outside": dict(Counter(o.op for o in seen.outside)),
        "error": float(np.abs(got - ref).max() / np.abs(ref).max()),
    }
    path.write_bytes(buffer)
    facts.write_text(json.dumps(described))
    return path, described


def lower(name: str, folder: Path, size: int) -> Path:
    """Lower one ExecuTorch program (reused from ``folder`` if there)."""
    path = folder / f"{name.replace(' ', '-')}-{size}.pte"
    if not path.is_file():
        print(f"lowering {name} ...", file=sys.stderr, flush=True)
        model, form = EXECUTORCH[name]
        program, _, modules = _program(model, form, size)
        path.write_bytes(et.lower(program, modules).buffer)
    return path


def arguments() -> Namespace:
    parser = harness.parser(__doc__, runs=200)
    parser.add_argument(
        "--forms",
        default=",".join(VARIANTS),
        help="comma-separated subset of the files (no-CA, stock, litert and their NHWC "
        "twins are always made)",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        chosen = set(args.forms.split(",")) | set(ALWAYS)
        files = {name: convert(name, folder, args.size) for name in VARIANTS if name in chosen}
        paths = {name: path for name, (path, _) in files.items()}
        if et.EXTRA.available():
            paths |= {name: lower(name, folder, args.size) for name in EXECUTORCH}
        samples = interleaved(paths, args.runs)
    p50 = {name: float(np.median(times)) for name, times in samples.items()}
    rounds = len(samples["no-CA"])
    print(f"{MODEL} at {args.size}x{args.size}, XNNPACK, 1 thread, {rounds} rounds interleaved")
    head = f"  {'file':14}{'ops':>5}{'TRANSPOSE':>10}{'(CA)':>5}{'parts':>6}{'exact':>9}"
    print(f"{head}{'p50 ms':>8}{'x no-CA':>8}{'x stock':>8}  ops outside XNNPACK")
    for name, (_, f) in files.items():
        base = "no-CA nhwc" if name.endswith("nhwc") else "no-CA"
        outside = ", ".join(f"{n} {op}" for op, n in f["outside"].items()) or "-"
        print(
            f"  {name:14}{f['ops']:5d}{f['transpose']:10d}{f['ca_transpose']:5d}"
            f"{f['partitions']:6d}{f['error']:9.1e}{p50[name]:8.2f}{p50[name] / p50[base]:8.3f}"
            f"{p50[name] / p50['stock']:8.3f}  {outside}"
        )
    if "xnnpack .pte" in p50:
        et_ratio = p50["xnnpack .pte"] / p50["no-CA .pte"]
        print(
            f"  ExecuTorch: no-CA {p50['no-CA .pte']:.2f} ms, xnnpack form "
            f"{p50['xnnpack .pte']:.2f} ms, x no-CA {et_ratio:.3f}"
        )
    else:
        print("  ExecuTorch: not installed, not timed")
    overhead = p50["litert"] / p50["no-CA"] - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    print(f"CA overhead, litert form: {overhead:+.1%} (target <= {TARGET_OVERHEAD:.0%}: {verdict})")
    nhwc = p50["litert nhwc"] / p50["no-CA nhwc"] - 1
    print(f"CA overhead, litert form, NHWC io: {nhwc:+.1%}")
    print(f"CA overhead, stock: {p50['stock'] / p50['no-CA'] - 1:+.1%}")


if __name__ == "__main__":
    main()
