"""CPU timing of ONNX Runtime and ExecuTorch programs, side by side, interleaved.

An ``.onnx`` file runs in ONNX Runtime; a ``.pte`` in ExecuTorch's runtime (XNNPACK) and
a ``.tflite`` in LiteRT's interpreter (XNNPACK) and a ``.ncnn.param`` (with its ``.ncnn.bin``)
in ncnn's, each behind the two calls timing needs from an ORT session (``PteSession``,
``TfliteSession``, ``NcnnSession``), so all are timed by the same loop and summarised by the
same statistics. An ncnn model runs with fp16 storage off (fp32, as its gate ran it) unless
ca-export's metadata beside it says fp16. ExecuTorch's thread pool is process-wide: it is
sized to each thread count before timing.

Each ONNX file runs in two session layouts (``LAYOUTS``): ``blocked`` (``ORT_ENABLE_ALL``,
where ORT on x86 runs convolutions in its blocked NCHWc layout) and ``plain``
(``ORT_ENABLE_EXTENDED``: plain NCHW, the stand-in for runtimes without the blocked
layout, e.g. ORT on ARM). Within one thread count, every round runs each model in each
layout once, in turn, so that drift of a shared machine (other jobs, clocks) hits all
alike; compare models by the ratio of their figures from the same run. Thread counts are
timed one after the other, never interleaved: an idle ORT pool keeps spinning for a while
and would steal cores from the next session. The op breakdown comes from ORT's own
profiler (``enable_profiling``), in separate sessions, so that profiling does not slow the
timed runs (ONNX files only).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from ca_export.errors import BadInputError
from ca_export.export import executorch as et
from ca_export.export import litert as lt
from ca_export.report.results import BenchConfig, BenchReport, Timing
from ca_export.verify.runtime import Runner

BenchProgress = Callable[[str, int, int], None]
"""Called as ``(phase, done, total)``; phases are ``warmup@N``, ``time@N`` and ``profile``."""

DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}
"""Timers by name (``time_interleaved``): wall time, or CPU time of the timing thread."""

LAYOUTS = {
    "blocked": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "plain": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}
"""Session layouts by name: the graph optimisation level that gives each."""


def no_progress(phase: str, done: int, total: int) -> None:
    """A progress callback that says nothing."""


@dataclass
class PteInput:
    """An input of a model outside ONNX Runtime as ``make_feeds`` reads an ORT input (its
    shape's strings are dims of any size)."""

    name: str
    shape: list[int | str]
    type: str = "tensor(float)"


class Input(Protocol):
    """What ``make_feeds`` reads of a session's input (ORT's ``NodeArg``, ``PteInput``)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None]: ...

    @property
    def type(self) -> str: ...


class Session(Protocol):
    """What timing needs of a session: ORT's ``InferenceSession`` has it, and each other
    runtime's model is wrapped to give it (``RunnerSession``)."""

    def get_inputs(self) -> Sequence[Input]: ...

    def run(self, output_names: None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]: ...


class RunnerSession:
    """A model run as a function of its one input, with the ``get_inputs`` and ``run`` of an
    ORT session."""

    def __init__(self, runner: Runner, inputs: list[PteInput]) -> None:
        self.runner = runner
        self.inputs = inputs

    def get_inputs(self) -> list[PteInput]:
        """The model's one input."""
        return self.inputs

    def run(self, _: None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        """Run the model on the feed."""
        (x,) = feeds.values()
        return self.runner(x)


class PteSession(RunnerSession):
    """An ExecuTorch program; its inputs named by position."""

    def __init__(self, path: Path) -> None:
        runner = et.PteRunner(path.read_bytes(), repr(str(path)))
        inputs = [PteInput(f"input_{i}", list(s)) for i, s in enumerate(runner.input_sizes)]
        super().__init__(runner.run, inputs)


class TfliteSession(RunnerSession):
    """A LiteRT model (XNNPACK), fed in its own layout (NHWC for a channels-last file)."""

    def __init__(self, path: Path, threads: int) -> None:
        runner = lt.LiteRunner(path.read_bytes(), threads=threads)
        super().__init__(runner.run, [PteInput("input_0", list(runner.input_shape))])


class NcnnSession(RunnerSession):
    """An ncnn model; its input takes any size, given as the bench's input shape."""

    def __init__(self, path: Path, threads: int) -> None:
        from ca_export.export.ncnn import files_of, read_metadata, stem_of
        from ca_export.verify.ncnn_runtime import NcnnRunner

        stem = stem_of(path)
        param, weights = files_of(stem)
        recorded = read_metadata(stem) or {}
        fp16 = recorded.get("precision") == "fp16"
        runner = NcnnRunner(param, weights, fp16=fp16, threads=threads, winograd=True)
        super().__init__(runner.run, [PteInput("in0", ["N", "C", "H", "W"])])


def one_layout(path: Path) -> bool:
    """Whether the file runs in one layout only (an ExecuTorch, LiteRT or ncnn model)."""
    return path.suffix in (".pte", ".tflite", ".param")


def session(
    path: Path, threads: int, profile_dir: Path | None = None, layout: str = "blocked"
) -> Session:
    """A CPU session with ``threads`` intra-op threads (``ort_session``); for a ``.pte``, the
    program in ExecuTorch with its thread pool sized to ``threads``, for a ``.tflite`` the
    model in LiteRT with ``threads`` XNNPACK threads, for a ``.ncnn.param`` the model in ncnn
    on ``threads`` (one layout each)."""
    if path.suffix == ".param":
        return NcnnSession(path, threads)
    if path.suffix == ".pte":
        et.set_threads(threads)
        return PteSession(path)
    if path.suffix == ".tflite":
        return TfliteSession(path, threads)
    ort_sess: Session = ort_session(path, threads, profile_dir, layout)
    return ort_sess


def ort_session(
    path: Path, threads: int, profile_dir: Path | None = None, layout: str = "blocked"
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, sequential, in
    ``layout`` (its graph optimisation level), profiling into ``profile_dir`` if given."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.graph_optimization_level = LAYOUTS[layout]
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / path.stem)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"ONNX Runtime cannot load {str(path)!r}: {first}") from None


def make_feeds(
    sess: Session, input_shape: tuple[int, ...] | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random inputs; the first input takes ``input_shape``, others their own shape."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, arg in enumerate(sess.get_inputs()):
        declared = list(arg.shape)
        dims = list(input_shape) if i == 0 and input_shape is not None else declared
        if len(dims) != len(declared):
            raise BadInputError(f"input {arg.name!r} has rank {len(declared)}, not {len(dims)}")
        sizes: list[int] = []
        for got, want in zip(dims, declared, strict=True):
            if not isinstance(got, int):
                raise BadInputError(f"input {arg.name!r} has dynamic dims; give an input shape")
            if isinstance(want, int) and want != got:
                raise BadInputError(f"input {arg.name!r} is {declared}, cannot feed {dims}")
            sizes.append(got)
        dtype = DTYPES.get(arg.type)
        if dtype is None:
            raise BadInputError(f"input {arg.name!r} has unsupported type {arg.type}")
        feeds[arg.name] = rng.standard_normal(sizes).astype(dtype)
    return feeds


def time_interleaved(
    sessions: dict[str, Session],
    feeds: dict[str, dict[str, np.ndarray]],
    config: BenchConfig,
    progress: BenchProgress = no_progress,
    label: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Per-run times (s, by ``clock``: wall time unless given) of each session, run
    round-robin, each round in a new order
    (seeded, so runs repeat): in any fixed or rotated order a session's place and the one
    before it showed in its times (one file measured 1.20x and 1.11x the no-CA net as two
    sessions of one rotated run).

    After the warm-up rounds, the number of rounds is ``config.runs`` or enough for
    ``config.min_time`` seconds at the warm-up pace, whichever is larger.

    ``time.thread_time`` (CPU time of this thread) leaves out the time the thread waits
    while other processes run: on a shared machine, for a runtime that computes in the
    calling thread (ncnn on one thread), its ratios move less with the load than wall time's.
    """
    names = list(sessions)
    samples: dict[str, list[float]] = {name: [] for name in names}

    orders = np.random.default_rng(0)

    def one_round() -> float:
        start_round = time.perf_counter()
        for index in orders.permutation(len(names)):
            name = names[index]
            start = clock()
            sessions[name].run(None, feeds[name])
            samples[name].append(clock() - start)
        return time.perf_counter() - start_round

    warm = max(config.warmup, 1)
    spent = 0.0
    for i in range(warm):
        spent += one_round()
        progress(f"warmup{label}", i + 1, warm)
    pace = spent / warm
    rounds = max(config.runs, math.ceil(config.min_time / pace) if pace > 0 else 0, 1)
    for values in samples.values():
        values.clear()
    for i in range(rounds):
        one_round()
        progress(f"time{label}", i + 1, rounds)
    return samples


def op_breakdown(
    path: Path,
    feeds: dict[str, np.ndarray],
    threads: int,
    warmup: int,
    runs: int,
    layout: str = "blocked",
) -> dict[str, float]:
    """ms per run by op type, from ORT's profile of ``runs`` runs after ``warmup`` runs.

    The trace's ``Node`` events named ``*_kernel_time`` are summed by ``args.op_name``
    over the runs after the warm-up (ORT's ``model_run`` events mark each run).
    """
    with tempfile.TemporaryDirectory(prefix="ca-export-profile-") as folder:
        sess = ort_session(path, threads, Path(folder), layout)
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    since = run_starts[-runs] if len(run_starts) >= runs else 0
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event["ts"] < since:
            continue
        op = event.get("args", {}).get("op_name", "?")
        totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def bench(
    models: dict[str, Path],
    input_shape: tuple[int, ...] | None = None,
    config: BenchConfig | None = None,
    progress: BenchProgress = no_progress,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchReport:
    """Time every model at every thread count in every layout (a ``.pte`` in one), all
    interleaved, by ``clock`` (``time_interleaved``); profile each ONNX file at the first
    count in the first layout."""
    config = config or BenchConfig()
    if not models:
        raise BadInputError("nothing to time")
    for path in models.values():
        if not Path(path).is_file():
            raise BadInputError(f"model file {str(path)!r} does not exist")
    if not config.threads or any(t < 1 for t in config.threads):
        raise BadInputError("thread counts must be positive integers")
    unknown = [layout for layout in config.layouts if layout not in LAYOUTS]
    if unknown or not config.layouts:
        raise BadInputError(f"layouts must be among {', '.join(LAYOUTS)}; got {unknown or 'none'}")
    runs = [
        (name, layout)
        for name, path in models.items()
        for layout in (config.layouts[:1] if one_layout(Path(path)) else config.layouts)
    ]
    feeds: dict[str, dict[str, np.ndarray]] = {}
    report = BenchReport(list(input_shape or []), {k: str(v) for k, v in models.items()}, config)
    for threads in config.threads:
        sessions = {
            f"{name}@{layout}": session(Path(models[name]), threads, layout=layout)
            for name, layout in runs
        }
        for (name, _), sess in zip(runs, sessions.values(), strict=True):
            feeds.setdefault(name, make_feeds(sess, input_shape, config.seed))
        if not report.input_shape:
            first = next(iter(feeds.values()))
            report.input_shape = list(next(iter(first.values())).shape)
        run_feeds = {key: feeds[name] for key, (name, _) in zip(sessions, runs, strict=True)}
        samples = time_interleaved(sessions, run_feeds, config, progress, f"@{threads}", clock)
        batch = report.input_shape[0] if report.input_shape else 1
        report.timings += [
            Timing.of(name, threads, layout, s, batch)
            for (name, layout), s in zip(runs, samples.values(), strict=True)
        ]
        del sessions
    if config.profile_runs > 0:
        profiled = {k: v for k, v in models.items() if not one_layout(Path(v))}
        for i, (name, path) in enumerate(profiled.items()):
            report.breakdown[name] = op_breakdown(
                Path(path),
                feeds[name],
                config.threads[0],
                config.warmup,
                config.profile_runs,
                config.layouts[0],
            )
            progress("profile", i + 1, len(profiled))
    return report
