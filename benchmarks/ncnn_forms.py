"""Which exact CA form is fastest in ncnn, and which stays right at other sizes (issue 24).

Converts MobileNetV2 without CA and MobileNetV2-CA the way a user does it with pnnx
(``stock``: TorchScript of the model, then pnnx), and MobileNetV2-CA rewritten into each
candidate form, through ``ca_export.export.ncnn`` (fp32 weights), then:

- times them all in ncnn, one thread, in one interleaved run (``ca_export.bench``), and
  prints each one's latency relative to the no-CA net and its speed-up over stock;
- runs each in ncnn (fp16 storage off) at the traced size and at two others, one
  non-square, and prints its error against PyTorch: max abs error over max |reference|.

Forms: ``ncnn`` traced with dynamic H/W (``ca-export ncnn``'s default: ``mean`` strip
pools, ncnn ``Reduction``) and traced static (``--fixed-size``: average pools spanning the
axis); the ``onnx`` form (``gate_once``); ``matmul_pool``; ``resize_pad``. Ratios are
the result; milliseconds depend on the machine and its load.

    python -m benchmarks.ncnn_forms --cache /tmp/ncnn-forms --runs 100

``--clock thread`` times by the timing thread's CPU time (ncnn runs one thread in it), for a
shared machine where wall time moves with the others' load.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from ca_export.bench import CLOCKS, BenchConfig, bench
from ca_export.export import ncnn
from ca_export.loading import load_model
from ca_export.rewrites import rewrite
from ca_export.tracing import example_input, trace
from ca_export.verify.ncnn_runtime import NcnnRunner

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"

Variant = tuple[str, str | None, bool]
"""Model, rewrite form (None: the stock conversion), dynamic H/W trace."""

VARIANTS: dict[str, Variant] = {
    "no-CA": (BASELINE, None, False),
    "stock": (MODEL, None, False),
    "ncnn (default, dynamic)": (MODEL, "ncnn", True),
    "ncnn --fixed-size": (MODEL, "ncnn", False),
    "onnx (gate_once)": (MODEL, "onnx", False),
    "matmul_pool": (MODEL, "matmul_pool", False),
    "resize_pad": (MODEL, "resize_pad", False),
}


def convert(name: str, folder: Path, size: int) -> Path:
    """The variant's param file in ``folder`` (reused when there)."""
    model, form, dynamic = VARIANTS[name]
    stem = folder / f"{name.split()[0]}{'-dyn' if dynamic else ''}{'-fixed' * ('fixed' in name)}"
    param, weights = ncnn.files_of(stem)
    if param.is_file() and weights.is_file():
        return param
    print(f"converting {name} ...", file=sys.stderr, flush=True)
    module = load_model(model).module
    shape = (1, 3, size, size)
    if form is not None:
        traced = trace(module, shape, dynamic=dynamic)
        module = rewrite(traced.program, static=not dynamic, form=form).program.module()
    converted = ncnn.convert(module, example_input(shape))
    param.write_text(converted.param)
    weights.write_bytes(converted.weights)
    return param


def errors(name: str, param: Path, sizes: list[tuple[int, int]]) -> list[float]:
    """Max abs error over max |reference| at each size (seeded input, batch 1)."""
    model = load_model(VARIANTS[name][0]).module
    runner = NcnnRunner(param, ncnn.files_of(ncnn.stem_of(param))[1])
    found = []
    for i, (h, w) in enumerate(sizes):
        x = example_input((1, 3, h, w), seed=i + 1)
        with torch.no_grad():
            ref = model(x).numpy()
        got = runner.run(x.numpy())[0].reshape(ref.shape)
        found.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
    return found


def main() -> None:
    parser = harness.parser(__doc__, runs=100, what="the ncnn files")
    parser.add_argument("--threads", type=int, default=1)
    harness.add_clock(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        params = {name: convert(name, folder, args.size) for name in VARIANTS}
        s = args.size
        sizes = [(s, s), (s - 64, s + 32), (s + 64, s + 64)]
        config = BenchConfig(runs=args.runs, threads=(args.threads,), profile_runs=0)
        report = bench(params, (1, 3, s, s), config, clock=CLOCKS[args.clock])
        p50 = {t.name: t.p50_ms for t in report.timings}
        sized = ", ".join(f"{h}x{w}" for h, w in sizes)
        runs = f"{args.runs} interleaved runs, {args.clock} clock"
        print(f"\nMobileNetV2-CA in ncnn, {args.threads} thread(s), {runs}")
        print(f"errors: max abs err / max |ref| at {sized}\n")
        rows = []
        for name, param in params.items():
            ms = p50[name]
            cells = [f"{e:.1e}" for e in errors(name, param, sizes)]
            ratios = [f"{ms / p50['no-CA'] - 1:+.0%}", f"{p50['stock'] / ms:.2f}x"]
            rows.append([name, f"{ms:.2f}", *ratios, *cells])
        heads = ["form", "p50 ms", "vs no-CA", "vs stock", *(f"{h}x{w}" for h, w in sizes)]
        print(harness.table(heads, rows))


if __name__ == "__main__":
    main()
