"""What a bounded dynamic H/W costs on ExecuTorch with XNNPACK, and the strip pool's form.

Lowers MobileNetV2 (no CA) and MobileNetV2-CA in the xnnpack form, static and with
bounded dynamic H/W (``ca-export executorch --dynamic``: from 64 to twice the size,
batch 1), plus the dynamic program with its strip pools left as ``mean`` over one axis
(``global_strip_pool`` switched off: the pools run outside XNNPACK), then times them in
ExecuTorch in one run, interleaved (``ca_export.bench``), at ``--size``, and prints
per program: delegate segments, the ops left outside XNNPACK, p50 and the ratio to the
no-CA program of the same kind. Ratios are the result; milliseconds depend on the load.

A .pte records only the largest size of a dynamic input, and ``bench`` feeds a program
the size it records, so the dynamic programs are traced at half ``--size``: their bounds
run from 64 to ``--size``, and they are timed at their largest size, the size the static
programs are timed at.

    python -m benchmarks.executorch_dynamic --cache /tmp/et-dyn-bench --runs 200
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

from ca_export.bench import BenchConfig, bench, render_bench
from ca_export.export import executorch as et
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.rewrites import rewrite
from ca_export.tracing import trace

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"

VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "no-CA static": (BASELINE, False, True),
    "no-CA dynamic": (BASELINE, True, True),
    "CA static": (MODEL, False, True),
    "CA dynamic": (MODEL, True, True),
    "CA dynamic, pools out": (MODEL, True, False),
}
"""Name: (model, bounded dynamic H/W, strip pools as global means)."""


def lower(name: str, folder: Path, args: Namespace) -> tuple[Path, dict[str, Any]]:
    """Lower one variant into ``folder`` (reused if there) and describe its delegation."""
    stem = name.replace(" ", "_").replace(",", "")
    path, facts = folder / f"{stem}-{args.size}.pte", folder / f"{stem}-{args.size}.json"
    if path.is_file() and facts.is_file():
        return path, json.loads(facts.read_text())
    print(f"lowering {name} ...", file=sys.stderr, flush=True)
    model, dynamic, global_pools = VARIANTS[name]
    size = args.size // 2 if dynamic else args.size
    shape = (1, 3, size, size)
    traced = trace(load_model(model).module, shape, dynamic=dynamic, bounded=True)
    blocks, _ = find(traced.program.graph)
    skip = () if global_pools else ("global_strip_pool",)
    program = rewrite(traced.program, not dynamic, "xnnpack", skip).program
    lowered = et.lower(program, [b.module for b in blocks])
    described = {
        "segments": lowered.segments,
        "outside": et.outside_counts(lowered.outside),
        "ca_outside": sum(o.block is not None for o in lowered.outside),
    }
    path.write_bytes(lowered.buffer)
    facts.write_text(json.dumps(described))
    return path, described


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="reuse/keep the .pte programs in this folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--min-time", type=float, default=0.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as temp:
        folder = args.cache or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        lowered = {name: lower(name, folder, args) for name in VARIANTS}
        config = BenchConfig(20, args.runs, args.min_time, (args.threads,), profile_runs=0)
        paths = {name: path for name, (path, _) in lowered.items()}
        report = bench(paths, (1, 3, args.size, args.size), config)
    t = args.threads
    p50 = {name: report.timing(name, t).p50_ms for name in paths}
    print(render_bench(report))
    rounds = report.timings[0].runs
    size = f"{args.size}x{args.size}"
    print(f"\n{MODEL} at {size}, ExecuTorch/XNNPACK, {t} thread(s), {rounds} rounds")
    print(f"  {'program':23}{'segments':>9}{'CA ops out':>11}{'x no-CA':>9}  ops outside XNNPACK")
    for name, (_, facts) in lowered.items():
        base = "no-CA dynamic" if VARIANTS[name][1] else "no-CA static"
        outside = ", ".join(f"{n} {op}" for op, n in facts["outside"].items()) or "-"
        print(
            f"  {name:23}{facts['segments']:9d}{facts['ca_outside']:11d}"
            f"{p50[name] / p50[base]:9.3f}  {outside}"
        )
    print(f"dynamic vs static, CA: {p50['CA dynamic'] / p50['CA static']:.3f}x")
    pools = p50["CA dynamic, pools out"] / p50["CA dynamic"]
    print(f"strip pools outside vs as global means (dynamic): {pools:.3f}x")


if __name__ == "__main__":
    main()
