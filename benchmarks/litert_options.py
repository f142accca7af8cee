"""Whether LiteRT interpreter options change what CA costs (issue 23).

The no-CA net, the stock conversion and the ``litert`` form (``benchmarks/litert_forms.py``'s
files), each loaded twice in ``ai_edge_litert``'s interpreter on one thread: with its
defaults (what ``ca-export`` verifies and times with) and with
``experimental_default_delegate_latest_features`` (XNNPACK's newest features), all six
timed in one interleaved run (``ca_export.bench.time_interleaved``). An option counts only
if it applies to the no-CA net as well, so each is reported as the ratio over the no-CA net
under the same option. The file is what ships; options are the app's, so this only notes
them.

    python -m benchmarks.litert_options --cache /tmp/litert-bench --runs 2500
"""

from __future__ import annotations

import warnings
from argparse import Namespace
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.litert_forms import convert
from ca_export.bench import PteInput, RunnerSession, time_interleaved
from ca_export.report.results import BenchConfig

FILES = ("no-CA", "stock", "litert")
OPTIONS: dict[str, dict[str, bool]] = {
    "default": {},
    "latest features": {"experimental_default_delegate_latest_features": True},
}
"""Option set: the ``Interpreter`` keyword arguments it adds."""


def session(path: Path, options: dict[str, bool]) -> RunnerSession:
    """The file in an interpreter with ``options``, one thread, as a bench session."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=path.read_bytes(), num_threads=1, **options)
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run(x: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(o["index"]) for o in outputs]

    return RunnerSession(run, [PteInput("input_0", [int(d) for d in given["shape"]])])


def arguments() -> Namespace:
    parser = harness.parser(__doc__, runs=500)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        paths = {name: convert(name, folder, args.size)[0] for name in FILES}
        sessions = {
            (name, option): session(path, OPTIONS[option])
            for name, path in paths.items()
            for option in OPTIONS
        }
    keys = {f"{name} / {option}": (name, option) for name, option in sessions}
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), np.float32)
    feeds = {label: {"input_0": x} for label in keys}
    samples = time_interleaved(
        {label: sessions[key] for label, key in keys.items()},
        feeds,
        BenchConfig(20, args.runs, 0.0, (1,), profile_runs=0),
    )
    times = {keys[label]: np.asarray(t) * 1e3 for label, t in samples.items()}
    print(f"{len(samples[next(iter(samples))])} rounds interleaved, XNNPACK, 1 thread")
    print(f"  {'option':17}{'file':8}{'p50 ms':>8}{'x no-CA':>8}{'paired':>8}")
    for option in OPTIONS:
        base = times[("no-CA", option)]
        for name in FILES:
            t = times[(name, option)]
            print(
                f"  {option:17}{name:8}{np.median(t):8.2f}{np.median(t) / np.median(base):8.3f}"
                f"{np.median(t / base):8.3f}"
            )


if __name__ == "__main__":
    main()
