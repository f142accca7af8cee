"""Layer-level alternatives to the two ``ca-export ncnn`` forms of MobileNetV2-CA (issue 24).

Each alternative edits the param file pnnx wrote for a form (``benchmarks.ncnn_forms``'s
files, same weights) into another exact computation of the same CA blocks:

- ``pool``: each ``Reduction`` mean strip pool of the size-safe form as an adaptive
  average ``Pooling`` to one column (or row), the other axis kept (``-233``): size-safe too;
- ``swap``: the two gate multiplies in the other order (``x * a_w * a_h``);
- ``gate map``: the gate map ``a_h * a_w`` first, then one same-shape multiply by ``x``.

Every alternative is run in ncnn (fp32, fp16 storage off) beside the file it was made
from, at the traced size and (for the size-safe form) at a non-square one, and the
largest difference printed; then all are timed in ncnn, one thread, in one interleaved
run (``ca_export.bench``), relative to the no-CA net. Ratios are the result.

    python -m benchmarks.ncnn_layers --cache /tmp/ncnn-forms --runs 100
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.ncnn_forms import convert
from ca_export.bench import BenchConfig, bench
from ca_export.export import ncnn
from ca_export.tracing import example_input
from ca_export.verify.ncnn_runtime import NcnnRunner

SOURCES = {"default": "ncnn (default, dynamic)", "fixed": "ncnn --fixed-size"}
"""The forms edited, by short name, as ``benchmarks.ncnn_forms`` names them."""


def adaptive_pools(text: str) -> str:
    """Each mean over W (ncnn axis 2) or H (axis 1) as an adaptive average ``Pooling``."""
    mean = r"Reduction(\s+\S+\s+)1 1 (\S+) (\S+) 0=3 1=0 -23303=1,{} 4=1 5=1"
    text = re.sub(mean.format(2), r"Pooling\1 1 1 \2 \3 0=1 7=1 8=1 18=-233", text)
    return re.sub(mean.format(1), r"Pooling\1 1 1 \2 \3 0=1 7=1 8=-233 18=1", text)


def _gate_pairs(text: str, edit: Callable[[list[str], list[str]], list[str]]) -> str:
    """Apply ``edit`` to each pair of chained multiplies ``t = x * a``, ``y = t * b``."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        a = lines[i].split()
        b = lines[i + 1].split() if i + 1 < len(lines) else []
        chained = a[:1] == b[:1] == ["BinaryOp"] and a[-1] == b[-1] == "0=2" and b[4] == a[6]
        if chained:
            out += edit(a, b)
            i += 2
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out) + "\n"


def swapped(text: str) -> str:
    """``x * a_w * a_h`` for ``x * a_h * a_w``."""
    return _gate_pairs(
        text,
        lambda a, b: [
            f"BinaryOp {a[1]} 2 1 {a[4]} {b[5]} {a[6]} 0=2",
            f"BinaryOp {b[1]} 2 1 {a[6]} {a[5]} {b[6]} 0=2",
        ],
    )


def gate_map(text: str) -> str:
    """``x * (a_h * a_w)`` for ``x * a_h * a_w``."""
    return _gate_pairs(
        text,
        lambda a, b: [
            f"BinaryOp {a[1]} 2 1 {a[5]} {b[5]} {a[6]} 0=2",
            f"BinaryOp {b[1]} 2 1 {a[4]} {a[6]} {b[6]} 0=2",
        ],
    )


EDITS: dict[str, tuple[str, Callable[[str], str]]] = {
    "default + pool": ("default", adaptive_pools),
    "default + swap": ("default", swapped),
    "default + gate map": ("default", gate_map),
    "fixed + swap": ("fixed", swapped),
    "fixed + gate map": ("fixed", gate_map),
}


def _output(param: Path, h: int, w: int) -> np.ndarray:
    runner = NcnnRunner(param, ncnn.files_of(ncnn.stem_of(param))[1])
    return runner.run(example_input((1, 3, h, w), seed=1).numpy())[0]


def main() -> None:
    parser = harness.parser(__doc__, runs=100, what="the ncnn files")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        s = args.size
        params = {"no-CA": convert("no-CA", folder, s)}
        params |= {short: convert(name, folder, s) for short, name in SOURCES.items()}
        for name, (source, edit) in EDITS.items():
            stem = folder / f"layers-{name.replace(' + ', '-').replace(' ', '-')}"
            param, weights = ncnn.files_of(stem)
            param.write_text(edit(params[source].read_text()))
            weights.write_bytes(ncnn.files_of(ncnn.stem_of(params[source]))[1].read_bytes())
            params[name] = param
        print(f"MobileNetV2-CA in ncnn at {s}x{s}, 1 thread, {args.runs} interleaved runs\n")
        for name, (source, _) in EDITS.items():
            sizes = [(s, s)] + ([(s - 64, s + 32)] if source == "default" else [])
            diffs = [
                float(np.abs(_output(params[name], h, w) - _output(params[source], h, w)).max())
                for h, w in sizes
            ]
            cells = ", ".join(f"{h}x{w} {d:.1e}" for (h, w), d in zip(sizes, diffs, strict=True))
            print(f"{name}: max abs difference from {source}: {cells}")
        config = BenchConfig(runs=args.runs, threads=(1,), profile_runs=0)
        report = bench(params, (1, 3, s, s), config)
        p50 = {t.name: t.p50_ms for t in report.timings}
        print("\n| form | p50 ms | vs no-CA |\n|---|---|---|")
        for name in params:
            print(f"| {name} | {p50[name]:.2f} | {p50[name] / p50['no-CA'] - 1:+.0%} |")


if __name__ == "__main__":
    main()
