"""How long ``ca-export onnx`` takes against a hand-written stock export script (issue 11).

Runs, alternately and as whole processes (imports included), ``ca-export onnx MODEL`` and
a script that does what a user would write by hand: build the model,
``torch.onnx.export(dynamo=True)``, onnxsim. Prints each side's median wall time and
CPU time (user + system, of the process and its threads: steadier than wall time on a
shared machine), their ratios (target <= 1.3), and the stage times of the last
``ca-export`` run from its report.

    python -m benchmarks.tool_time --rounds 3
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser
from pathlib import Path

HAND = """
import sys, torch, onnx, onnxsim
from sample_models import build
model = build(sys.argv[1]).eval()
x = torch.randn(*map(int, sys.argv[2].split(",")))
program = torch.onnx.export(model, (x,), dynamo=True, optimize=True)
simplified, _ = onnxsim.simplify(program.model_proto)
onnx.save(simplified, sys.argv[3])
"""


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time of one process; a failure stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_ca")
    parser.add_argument("--input-shape", default="1,3,224,224")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out, report = Path(folder) / "tool.onnx", Path(folder) / "tool.json"
        tool = [str(Path(sys.executable).parent / "ca-export"), "onnx", args.model]
        tool += ["--input-shape", args.input_shape, "-o", str(out), "--report", str(report)]
        hand = [sys.executable, "-c", HAND, args.model, args.input_shape, f"{folder}/hand.onnx"]
        times: dict[str, list[tuple[float, float]]] = {
            "ca-export onnx": [],
            "hand-written stock": [],
        }
        for _ in range(args.rounds):
            times["hand-written stock"].append(_timed(hand))
            times["ca-export onnx"].append(_timed(tool))
        stages = json.loads(report.read_text())["stages"]
    for i, kind in enumerate(("wall", "CPU")):
        medians = {name: statistics.median(v[i] for v in values) for name, values in times.items()}
        for name, value in medians.items():
            runs = ", ".join(f"{v[i]:.1f}" for v in times[name])
            print(f"{name:20s} {kind:4s} {value:6.1f} s  (runs: {runs})")
        ratio = medians["ca-export onnx"] / medians["hand-written stock"]
        print(f"{kind} ratio {ratio:.2f} (target <= 1.30)")
    print("ca-export stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))


if __name__ == "__main__":
    main()
