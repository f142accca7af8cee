"""File size and ONNX Runtime CPU latency of fp32, fp16 and int8 MobileNetV2-CA (issue 13).

Exports the gated fp32 model once (``--cache`` keeps it), converts it with the library's
own converters (``ca_export.export.precision``: fp16; int8 with every node quantized;
int8 with ``--keep-fp32`` stages, default features.0-5, kept fp32), then times every
variant under both ``ORT_ENABLE_ALL`` and ``ORT_ENABLE_EXTENDED`` in one run, interleaved,
and prints size and p50 latency as ratios against fp32 with ``ORT_ENABLE_ALL``.
It times formats; whether each passes the lossy gate is ``ca-export onnx``'s business
(the report names the verdict).

    python -m benchmarks.precision --cache /tmp/precision-bench --runs 200
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks import harness
from ca_export.bench import BenchConfig, Timing, time_interleaved
from ca_export.export.precision import seeded_calibration, to_fp16, to_int8
from ca_export.pipeline import OnnxJob, export_onnx

MODEL = "mobilenetv2_ca"
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def variants(folder: Path, size: int, keep: list[str]) -> dict[str, Path]:
    """fp32 (exported and gated), fp16, int8 and int8 with ``keep`` fp32, in ``folder``."""
    fp32 = folder / f"{MODEL}-{size}.onnx"
    shape = (1, 3, size, size)
    if not fp32.is_file():
        print(f"exporting {MODEL} ...", file=sys.stderr, flush=True)
        if not export_onnx(OnnxJob(MODEL, fp32, None, shape)).passed:
            raise SystemExit("the fp32 export did not pass its gates")
    model = onnx.load(fp32)
    calibration = [x for _, x in seeded_calibration(shape)]
    paths = {"fp32": fp32}
    makers = {
        "fp16": lambda: to_fp16(model),
        "int8": lambda: to_int8(model, "x", calibration),
        f"int8-keep-{len(keep)}": lambda: to_int8(model, "x", calibration, keep),
    }
    for name, make in makers.items():
        path = folder / f"{MODEL}-{size}-{name}.onnx"
        if not path.is_file():
            print(f"converting {name} ...", file=sys.stderr, flush=True)
            onnx.save(make(), path)
        paths[name] = path
    return paths


def session(path: Path, level: ort.GraphOptimizationLevel, threads: int) -> ort.InferenceSession:
    """A sequential CPU session at one graph optimisation level."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = harness.parser(__doc__, runs=200, what="the models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.0)
    parser.add_argument(
        "--keep-fp32", default=",".join(f"features.{i}" for i in range(6)), help="modules, comma"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    keep = [m for m in args.keep_fp32.split(",") if m]
    with harness.work_folder(args.cache) as folder:
        paths = variants(folder, args.size, keep)
        sessions = {
            f"{name}/{level}": session(path, opt, args.threads)
            for name, path in paths.items()
            for level, opt in LEVELS.items()
        }
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size))
        feeds = {name: {"x": x.astype(np.float32)} for name in sessions}
        config = BenchConfig(20, args.runs, args.min_time, (args.threads,))
        samples = time_interleaved(sessions, feeds, config)
        timings = {name: Timing.of(name, args.threads, s, 1) for name, s in samples.items()}
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    base = timings["fp32/all"].p50_ms
    runs = next(iter(timings.values())).runs
    print(f"{MODEL} {args.size}x{args.size}, {args.threads} thread(s), {runs} rounds interleaved")
    print("| variant | MB | size vs fp32 | ORT level | p50 ms | p90 ms | p50 vs fp32/all |")
    print("|---|---|---|---|---|---|---|")
    for name, t in timings.items():
        variant, level = name.split("/")
        mb = sizes[variant] / 1e6
        print(
            f"| {variant} | {mb:.2f} | {sizes[variant] / sizes['fp32']:.3f} | {level} | "
            f"{t.p50_ms:.2f} | {t.p90_ms:.2f} | {t.p50_ms / base:.3f} |"
        )


if __name__ == "__main__":
    main()
