"""Which exact CA form is fastest in each ONNX Runtime layout (issue 11).

Exports MobileNetV2-CA stock (rewrite off), in every candidate form, and MobileNetV2
without CA, then times them all in one run, interleaved, in both session layouts
(``blocked``: ``ORT_ENABLE_ALL``, NCHWc on x86; ``plain``: ``ORT_ENABLE_EXTENDED``, the
stand-in for runtimes without the blocked layout, e.g. ORT on ARM), and prints per layout
each form's latency relative to the no-CA net and its speed-up over the stock export.
The fastest form per layout is what ``ca_export.rewrites.TARGETS`` should map the
layout's target to. Ratios are the result; absolute milliseconds depend on the machine.

    python -m benchmarks.target_forms --cache /tmp/forms-bench --runs 300
    python -m benchmarks.target_forms --cache /tmp/forms-bench --dynamic
    python -m benchmarks.target_forms --cache /tmp/forms-bench --ablations
"""

from __future__ import annotations

import sys
import warnings
from argparse import Namespace
from pathlib import Path

from benchmarks import harness
from ca_export.bench import BenchConfig, bench
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import render_bench
from ca_export.rewrites import TARGETS

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"

Variant = tuple[str, bool, str, tuple[str, ...]]
"""Model spec, rewrite on, form, passes left out."""

VARIANTS: dict[str, Variant] = {
    "no-CA": (BASELINE, True, "onnx", ()),
    "stock": (MODEL, False, "onnx", ()),
    "onnx (gate_once)": (MODEL, True, "onnx", ()),
    "A resize": (MODEL, True, "resize", ()),
    "B resize+pad": (MODEL, True, "resize_pad", ()),
    "pad only": (MODEL, True, "resize_pad", ("resize_gate",)),
    "C matmul_pool": (MODEL, True, "matmul_pool", ()),
}
ABLATIONS: dict[str, Variant] = {
    "onnx -gate_once": (MODEL, True, "onnx", ("gate_once",)),
    "onnx -hardswish": (MODEL, True, "onnx", ("hardswish",)),
}
"""``--ablations``: the ``onnx`` form without one of its passes, to show what each is worth."""


def export(name: str, spec: Variant, folder: Path, args: Namespace) -> Path:
    """Export one variant into ``folder`` unless it is there already."""
    model, rewrite, form, skip = spec
    tag = "dyn" if args.dynamic else "static"
    slug = name.split()[0].replace("+", "_")
    cut = "".join(f"-no_{p}" for p in skip)
    path = folder / f"{slug}-{form}{cut}-{args.size}-{tag}.onnx"
    if path.is_file():
        return path
    print(f"exporting {name} ...", file=sys.stderr, flush=True)
    shape = (1, 3, args.size, args.size)
    job = OnnxJob(
        model, path, None, shape, dynamic=args.dynamic, rewrite=rewrite, skip_passes=skip, form=form
    )
    if not export_onnx(job).passed:
        raise SystemExit(f"{name}: the export did not pass its gates")
    return path


def main() -> None:
    parser = harness.parser(__doc__, runs=200, what="exports")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.0)
    parser.add_argument("--dynamic", action="store_true", help="dynamic H/W exports")
    parser.add_argument("--ablations", action="store_true", help="also the onnx form less a pass")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    variants = VARIANTS | (ABLATIONS if args.ablations else {})
    if args.dynamic:
        variants.pop("stock")  # the stock dynamic export fails (adaptive pools)
    with harness.work_folder(args.cache) as folder:
        paths = {name: export(name, spec, folder, args) for name, spec in variants.items()}
        config = BenchConfig(20, args.runs, args.min_time, (args.threads,), profile_runs=0)
        report = bench(paths, (1, 3, args.size, args.size), config)
    t = args.threads
    print(render_bench(report))
    print(f"\n{MODEL} at {args.size}x{args.size}, {t} thread(s), {report.timings[0].runs} rounds")
    for layout in config.layouts:
        print(f"{layout} layout: x no-CA" + (", speed-up over stock" if "stock" in paths else ""))
        for name in paths:
            rel = report.ratio(name, "no-CA", t, layout=layout)
            over = report.ratio("stock", name, t, layout=layout) if "stock" in paths else None
            print(f"  {name:18} {rel:6.3f}" + (f" {over:6.3f}x" if over is not None else ""))
    print(f"targets: {TARGETS}")


if __name__ == "__main__":
    main()
