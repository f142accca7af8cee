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

from pathlib import Path
from typing import Any

from benchmarks.executorch_overhead import arguments, cached, lower_and_time, print_programs
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


def lower(name: str, folder: Path, size: int) -> tuple[Path, dict[str, Any]]:
    """Lower one variant (reused if there) and describe its delegation; dynamic programs are
    traced at half ``size``, so their bounds end at it."""
    model, dynamic, global_pools = VARIANTS[name]

    def make() -> tuple[Any, list[str]]:
        side = size // 2 if dynamic else size
        shape = (1, 3, side, side)
        traced = trace(load_model(model).module, shape, dynamic=dynamic, bounded=True)
        blocks, _ = find(traced.program.graph)
        skip = () if global_pools else ("global_strip_pool",)
        program = rewrite(traced.program, not dynamic, "xnnpack", skip).program
        return program, [b.module for b in blocks]

    stem = name.replace(" ", "_").replace(",", "")
    return cached(folder, f"{stem}-{size}", make)


def main() -> None:
    args = arguments(__doc__)
    lowered, report = lower_and_time(VARIANTS, lambda n, f: lower(n, f, args.size), args)
    p50 = print_programs(
        lowered, report, args, lambda n: "no-CA dynamic" if VARIANTS[n][1] else "no-CA static"
    )
    print(f"dynamic vs static, CA: {p50['CA dynamic'] / p50['CA static']:.3f}x")
    pools = p50["CA dynamic, pools out"] / p50["CA dynamic"]
    print(f"strip pools outside vs as global means (dynamic): {pools:.3f}x")


if __name__ == "__main__":
    main()
