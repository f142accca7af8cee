"""What CA costs on ExecuTorch with XNNPACK, and what the xnnpack form wins back (issue 16).

Lowers MobileNetV2 without CA, MobileNetV2-CA stock (no rewrite), MobileNetV2-CA with
the ONNX form of the rewrite (``gate_once``, for comparison) and with the xnnpack form
(``broadcast_gate``) to .pte programs, then times them in ExecuTorch in one run,
interleaved (``ca_export.bench``), and prints per program: delegate segments, the ops
left outside XNNPACK (CA ops among them), p50, and the ratios against the targets:

- one delegate segment and 0 CA ops outside XNNPACK for the xnnpack form;
- CA overhead (xnnpack form p50 / no-CA p50 - 1) <= 40%;
- speed-up over the stock lowering (stock p50 / xnnpack form p50) >= 1.7x.

Ratios are the result; absolute milliseconds depend on the machine and its load.

    python -m benchmarks.executorch_overhead --cache /tmp/et-bench
    python -m benchmarks.executorch_overhead --cache /tmp/et-bench --runs 300 --threads 1
"""

from __future__ import annotations

import json
import sys
import warnings
from argparse import Namespace
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import harness
from ca_export.bench import BenchConfig, BenchReport, bench
from ca_export.export import executorch as et
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.report import render_bench
from ca_export.rewrites import rewrite
from ca_export.tracing import trace

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"
TARGET_SPEEDUP, TARGET_OVERHEAD = 1.7, 0.40

VARIANTS: dict[str, tuple[str, str | None]] = {
    "no-CA": (BASELINE, None),
    "stock": (MODEL, None),
    "onnx-form": (MODEL, "onnx"),
    "xnnpack-form": (MODEL, "xnnpack"),
}
"""Name: (model, rewrite form or None for the stock program)."""


Lowered = dict[str, tuple[Path, dict[str, Any]]]
"""Per program: the .pte and its delegation (segments, ops outside, CA ops outside)."""


def cached(folder: Path, stem: str, make: Callable[[], Any]) -> tuple[Path, dict[str, Any]]:
    """``make()``'s program lowered into ``folder/stem.pte`` with its delegation beside it in
    ``stem.json``; both are reused when there. ``make`` returns (program, CA modules)."""
    path, facts = folder / f"{stem}.pte", folder / f"{stem}.json"
    if path.is_file() and facts.is_file():
        return path, json.loads(facts.read_text())
    print(f"lowering {stem} ...", file=sys.stderr, flush=True)
    program, modules = make()
    lowered = et.lower(program, modules)
    described = {
        "segments": lowered.segments,
        "outside": et.outside_counts(lowered.outside),
        "ca_outside": sum(o.block is not None for o in lowered.outside),
    }
    path.write_bytes(lowered.buffer)
    facts.write_text(json.dumps(described))
    return path, described


def arguments(doc: str) -> Namespace:
    """The options both ExecuTorch benchmarks take."""
    parser = harness.parser(doc, runs=200, what="the .pte programs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.0)
    return parser.parse_args()


def lower_and_time(
    names: Iterable[str], lower: Callable[[str, Path], tuple[Path, dict[str, Any]]], args: Namespace
) -> tuple[Lowered, BenchReport]:
    """Lower every program (into ``--cache`` or a temporary folder), then time them all in
    ExecuTorch, interleaved, at ``--size``."""
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        lowered = {name: lower(name, folder) for name in names}
        config = BenchConfig(20, args.runs, args.min_time, (args.threads,), profile_runs=0)
        paths = {name: path for name, (path, _) in lowered.items()}
        return lowered, bench(paths, (1, 3, args.size, args.size), config)


def lower(name: str, folder: Path, size: int) -> tuple[Path, dict[str, Any]]:
    """Lower one variant at ``size`` (reused if there) and describe its delegation."""
    model, form = VARIANTS[name]

    def make() -> tuple[Any, list[str]]:
        traced = trace(load_model(model).module, (1, 3, size, size), dynamic=False)
        blocks, _ = find(traced.program.graph)
        program = traced.program if form is None else rewrite(traced.program, True, form).program
        return program, [b.module for b in blocks]

    return cached(folder, f"{name}-{size}", make)


def print_programs(
    lowered: dict[str, Any], report: BenchReport, args: Namespace, baseline: Callable[[str], str]
) -> dict[str, float]:
    """Print the timings, then per program its XNNPACK segments, the CA ops left outside,
    its p50 over its ``baseline`` program's and the ops outside; return the p50s."""
    t = args.threads
    p50 = {name: report.timing(name, t).p50_ms for name in lowered}
    print(render_bench(report))
    rounds = report.timings[0].runs
    print(
        f"\n{MODEL} at {args.size}x{args.size}, ExecuTorch/XNNPACK, {t} thread(s), {rounds} rounds"
    )
    width = max(map(len, lowered)) + 2
    print(
        f"  {'program':{width}}{'segments':>9}{'CA ops out':>11}{'x no-CA':>9}  ops outside XNNPACK"
    )
    for name, (_, facts) in lowered.items():
        outside = ", ".join(f"{n} {op}" for op, n in facts["outside"].items()) or "-"
        print(
            f"  {name:{width}}{facts['segments']:9d}{facts['ca_outside']:11d}"
            f"{p50[name] / p50[baseline(name)]:9.3f}  {outside}"
        )
    return p50


def main() -> None:
    args = arguments(__doc__)
    lowered, report = lower_and_time(VARIANTS, lambda n, f: lower(n, f, args.size), args)
    p50 = print_programs(lowered, report, args, lambda _: "no-CA")
    form = lowered["xnnpack-form"][1]
    one = form["segments"] == 1 and form["ca_outside"] == 0
    print(f"xnnpack form: one segment, no CA op outside: {'met' if one else 'NOT met'}")
    overhead = p50["xnnpack-form"] / p50["no-CA"] - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    print(
        f"CA overhead, xnnpack form: {overhead:+.1%} (target <= {TARGET_OVERHEAD:.0%}: {verdict})"
    )
    print(f"CA overhead, stock:        {p50['stock'] / p50['no-CA'] - 1:+.1%}")
    print(f"CA overhead, onnx form:    {p50['onnx-form'] / p50['no-CA'] - 1:+.1%}")
    speedup = p50["stock"] / p50["xnnpack-form"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
    print(
        f"speed-up xnnpack form vs stock: {speedup:.3f}x (target >= {TARGET_SPEEDUP}x: {verdict})"
    )


if __name__ == "__main__":
    main()
