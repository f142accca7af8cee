"""Where each CA block's time goes in ncnn, per block and per stage (issue 24).

ncnn's Python wheel has no per-layer timing (it is built without ``NCNN_BENCHMARK``), but
an extractor takes any blob as its input. So each CA block of a form's param file
(``benchmarks.ncnn_forms``'s files) is fed its own input ``x`` (the blob the block's
multiplies read, in ncnn's packed layout, as the full run leaves it) and timed up to:

- ``x`` itself (the baseline subtracted from the rest);
- ``strips``: every ``Reduction``/``Pooling`` the gates read through (for the default form
  also the stem conv they read, ``stem_before_pool``);
- ``gates``: both gates (the strips, the stem and gate convs, HardSwish, sigmoid);
- ``out``: the block's output (the gates and both broadcasting multiplies).

``convs`` is gates minus strips, ``multiplies`` out minus gates. All jobs and the full
nets run in one interleaved run (``ca_export.bench.time_interleaved``, one thread, fp32,
Winograd on, as ``bench`` runs ncnn; ``--clock thread`` for CPU time); each stage's sum
over the blocks is printed as a share of the no-CA net's p50, next to the full forms' own
ratios. Each block job runs
``REPEAT`` times per timed call, so that ``x`` is mostly as warm as the net leaves it (the
dwconv before the block has just written it); the stage sums still come out above the
whole-net ratios (per-call extractor overhead, and ``x`` colder on the first of the runs).

    python -m benchmarks.ncnn_blocks --cache /tmp/ncnn-forms --runs 300
"""

from __future__ import annotations

import warnings
from itertools import pairwise
from typing import Any

import ncnn as ncnn_runtime
import numpy as np

from benchmarks import harness
from benchmarks.ncnn_forms import convert
from ca_export.bench import CLOCKS, PteInput, time_interleaved
from ca_export.export import ncnn
from ca_export.export.ncnn import Layer, parse_param
from ca_export.report.results import BenchConfig
from ca_export.tracing import example_input
from ca_export.verify.ncnn_runtime import NcnnRunner

FORMS = {"default": "ncnn (default, dynamic)", "fixed": "ncnn --fixed-size"}
STAGES = ("strips", "convs", "multiplies")
REPEAT = 4
"""Runs per timed call: after the first, ``x`` is as warm as the net leaves it."""


class Job:
    """One block's blobs extracted from its input; ``run`` has the call an ORT session has."""

    def __init__(
        self, runner: NcnnRunner, x: str, x_mat: Any, blobs: list[str], repeat: int = 1
    ) -> None:
        self.net, self.x, self.x_mat, self.blobs = runner.net, x, x_mat, blobs
        self.repeat = repeat

    def get_inputs(self) -> list[PteInput]:
        """No input of its own: the block's input is held."""
        return [PteInput("unused", [1])]

    def run(self, _: None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        """``repeat`` times: feed the block's input, extract its blobs (raw, no unpacking)."""
        for _ in range(self.repeat):
            extractor = self.net.create_extractor()
            extractor.input(self.x, self.x_mat)
            for blob in self.blobs:
                extractor.extract(blob, 1)
        return []


def blocks(layers: list[Layer]) -> list[dict[str, list[str]]]:
    """Per CA block (two chained multiplies ``x * a * b``): its input, strips, gates and
    output blobs."""
    producer = {blob: layer for layer in layers for blob in layer.outputs}
    found = []
    for first, second in pairwise(layers):
        chained = first.type == second.type == "BinaryOp" and second.inputs[0] == first.outputs[0]
        if not (chained and first.params.get("0") == "2"):
            continue
        x = producer[first.inputs[0]].inputs[0]
        gates = [first.inputs[1], second.inputs[1]]
        strips: list[str] = []
        for gate in gates:
            layer = producer[gate]
            while layer.type not in ("Reduction", "Pooling"):
                layer = producer[layer.inputs[0]]
            strips.append(layer.outputs[0])
        found.append({"x": [x], "strips": strips, "gates": gates, "out": second.outputs})
    return found


def main() -> None:
    parser = harness.parser(__doc__, runs=300, what="the ncnn files")
    harness.add_clock(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        s = args.size
        x_in = example_input((1, 3, s, s)).numpy()
        sessions: dict[str, Any] = {}
        shapes: dict[str, list[str]] = {}
        for name in ("no-CA", *FORMS):
            param = convert(FORMS.get(name, name), folder, s)
            runner = NcnnRunner(param, ncnn.files_of(ncnn.stem_of(param))[1], winograd=True)
            sessions[name] = Job(runner, "in0", held_mat(x_in[0]), ["out0"])
            for k, block in enumerate(blocks(parse_param(param.read_text()))):
                extractor = runner.net.create_extractor()
                extractor.input("in0", held_mat(x_in[0]))
                _, x_mat = extractor.extract(block["x"][0], 1)
                shapes[f"{name} {k}"] = [str(x_mat.c * x_mat.elempack), str(x_mat.h), str(x_mat.w)]
                for stage, blobs in block.items():
                    job = Job(runner, block["x"][0], x_mat.clone(), blobs, REPEAT)
                    sessions[f"{name} {k} {stage}"] = job
        feeds = {name: {"unused": np.zeros(1, np.float32)} for name in sessions}
        config = BenchConfig(runs=args.runs, threads=(1,), profile_runs=0)
        times = time_interleaved(sessions, feeds, config, clock=CLOCKS[args.clock])
        p50 = {name: float(np.median(t)) * 1e3 / sessions[name].repeat for name, t in times.items()}
        base = p50["no-CA"]
        runs = f"{args.runs} interleaved runs, {args.clock} clock"
        print(f"MobileNetV2-CA in ncnn at {s}x{s}, 1 thread, {runs}")
        print(f"no-CA net p50 {base:.2f} ms; stages in us per block (x alone subtracted)\n")
        for name in FORMS:
            print(f"{name} form, whole net {p50[name] / base - 1:+.1%} over no-CA:\n")
            print(f"| block | C x H x W | {' | '.join(STAGES)} | total |")
            print("|---|---|---|---|---|---|")
            sums = np.zeros(4)
            k = 0
            while f"{name} {k} x" in p50:
                at = {
                    stage: p50[f"{name} {k} {stage}"] for stage in ("x", "strips", "gates", "out")
                }
                row = np.array(
                    [
                        at["strips"] - at["x"],
                        at["gates"] - at["strips"],
                        at["out"] - at["gates"],
                        at["out"] - at["x"],
                    ]
                )
                sums += row
                cells = " | ".join(f"{1e3 * v:.0f}" for v in row)
                print(f"| {k} | {' x '.join(shapes[f'{name} {k}'])} | {cells} |")
                k += 1
            shares = " | ".join(f"**{v / base:+.1%}**" for v in sums)
            print(f"| sum, share of no-CA | | {shares} |\n")


def held_mat(sample: np.ndarray) -> Any:
    """An ncnn Mat holding its own copy of ``sample`` (an in-place first layer needs one)."""
    return ncnn_runtime.Mat(np.ascontiguousarray(sample)).clone()


if __name__ == "__main__":
    main()
