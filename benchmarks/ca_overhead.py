"""What CA costs on ONNX Runtime CPU, and what the rewrite wins back (issue 5).

Exports MobileNetV2-CA stock (rewrite off) and rewritten, and MobileNetV2 without CA,
then times them in one run, interleaved, and prints:

- speed-up of the rewritten export over the stock one (stock p50 / rewritten p50);
- CA overhead, stock and rewritten: ms with CA / ms of ``mobilenetv2`` - 1.

``--ablations`` also exports the rewrite without ``gate_once`` and without
``hardswish``, to show what each of them is worth. Ratios are the result; absolute
milliseconds depend on the machine and on what else runs on it.

    python -m benchmarks.ca_overhead --cache /tmp/ca-bench
    python -m benchmarks.ca_overhead --cache /tmp/ca-bench --ablations --min-time 60
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from argparse import ArgumentParser, Namespace
from pathlib import Path

from ca_export.bench import BenchConfig, bench, render_bench
from ca_export.pipeline import OnnxJob, export_onnx

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"
TARGET_SPEEDUP, TARGET_OVERHEAD = 1.25, 0.30

Variant = tuple[str, bool, tuple[str, ...]]
"""Model spec, rewrite on, rewrite passes left out (``--skip-pass``)."""

VARIANTS: dict[str, Variant] = {
    "stock": (MODEL, False, ()),
    "rewritten": (MODEL, True, ()),
    "no-CA": (BASELINE, True, ()),
}
ABLATIONS: dict[str, Variant] = {
    "rewritten-no-gate_once": (MODEL, True, ("gate_once",)),
    "rewritten-no-hardswish": (MODEL, True, ("hardswish",)),
}


def export(name: str, spec: Variant, folder: Path, args: Namespace) -> Path:
    """Export one variant into ``folder`` unless it is there already."""
    model, rewrite, skip = spec
    tag = "dyn" if args.dynamic else "static"
    path = folder / f"{name}-{args.size}-{tag}.onnx"
    if path.is_file():
        return path
    print(f"exporting {name} ...", file=sys.stderr, flush=True)
    shape = (1, 3, args.size, args.size)
    job = OnnxJob(model, path, None, shape, dynamic=args.dynamic, rewrite=rewrite, skip_passes=skip)
    report = export_onnx(job)
    if not report.passed:
        raise SystemExit(f"{name}: the export did not pass its gates")
    return path


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="reuse/keep exports in this folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--min-time", type=float, default=0.0)
    parser.add_argument("--dynamic", action="store_true", help="dynamic H/W exports")
    parser.add_argument("--ablations", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    variants = VARIANTS | (ABLATIONS if args.ablations else {})
    if args.dynamic:
        variants.pop("stock")  # the stock dynamic export fails (adaptive pools)
    with tempfile.TemporaryDirectory() as temp:
        folder = args.cache or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: export(name, spec, folder, args) for name, spec in variants.items()}
        config = BenchConfig(20, args.runs, args.min_time, (args.threads,))
        report = bench(paths, (1, 3, args.size, args.size), config)
    t = args.threads
    p50 = {name: report.timing(name, t).p50_ms for name in paths}
    print(render_bench(report, top=10))
    print(f"\n{MODEL} at {args.size}x{args.size}, {t} thread(s), {report.timings[0].runs} rounds")
    base = p50["no-CA"]
    if "stock" in p50:
        speedup = p50["stock"] / p50["rewritten"]
        verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
        print(
            f"speed-up rewritten vs stock: {speedup:.3f}x (target >= {TARGET_SPEEDUP}x: {verdict})"
        )
        print(f"CA overhead, stock:          {p50['stock'] / base - 1:+.1%}")
    overhead = p50["rewritten"] / base - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    print(
        f"CA overhead, rewritten:      {overhead:+.1%} (target <= {TARGET_OVERHEAD:.0%}: {verdict})"
    )
    for name in ABLATIONS:
        if name in p50:
            print(f"CA overhead, {name}: {p50[name] / base - 1:+.1%}")


if __name__ == "__main__":
    main()
