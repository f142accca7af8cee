"""ONNX Runtime timing: percentiles, interleaving, op breakdown, and ``ca-export bench``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from ca_export.bench import CLOCKS, BenchConfig, bench, time_interleaved
from ca_export.errors import BadInputError
from ca_export.pipeline import OnnxJob
from ca_export.pipeline import bench as bench_pipeline
from ca_export.pipeline.bench import BenchJob
from ca_export.pipeline.ncnn import NcnnJob
from ca_export.report import render_bench
from cli.main import cli

FAST = BenchConfig(warmup=2, runs=8, threads=(1,), profile_runs=3)
SHAPE = (1, 8, 16, 16)


def _model(path: Path, gates: int) -> Path:
    """A 1x1 conv whose output multiplies itself ``gates`` times; batch is dynamic."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])]
    last = "c"
    for i in range(gates):
        nodes.append(helper.make_node("Mul", [last, "c"], [f"m{i}"]))
        last = f"m{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 16, 16])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    return {"one": _model(tmp_path / "one.onnx", 1), "four": _model(tmp_path / "four.onnx", 4)}


def test_bench_reports_ordered_percentiles_per_model_and_thread(tiny: dict[str, Path]) -> None:
    seen: list[tuple[str, int, int]] = []
    report = bench(tiny, SHAPE, FAST, progress=lambda *a: seen.append(a))
    pairs = [(t.name, t.threads, t.layout) for t in report.timings]
    assert pairs == [(n, 1, lay) for n in ("one", "four") for lay in ("blocked", "plain")]
    for t in report.timings:
        assert t.runs == 8
        assert 0 < t.min_ms <= t.p50_ms <= t.p90_ms <= t.p99_ms
        assert t.throughput == pytest.approx(1e3 / t.mean_ms)
    one, four = report.timing("one", 1), report.timing("four", 1)
    assert report.ratio("four", "one", 1) == pytest.approx(four.p50_ms / one.p50_ms)
    assert report.ratio("four", "one", 1, "mean_ms") == pytest.approx(four.mean_ms / one.mean_ms)
    assert report.ratio("one", "four", 1) == pytest.approx(1 / report.ratio("four", "one", 1))
    assert ("time@1", 8, 8) in seen and ("profile", 2, 2) in seen
    assert json.loads(json.dumps(report.to_dict()))["input_shape"] == list(SHAPE)
    assert report.ratio("four", "one", 1, layout="plain") == pytest.approx(
        report.timing("four", 1, "plain").p50_ms / report.timing("one", 1, "plain").p50_ms
    )
    assert "plain p50 ms" in render_bench(report)


def test_layouts_are_interleaved_sessions_at_their_optimisation_level(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    levels: list[tuple[str, object]] = []
    real = ort.InferenceSession

    def spy(path: str, options: ort.SessionOptions, **kwargs: object) -> ort.InferenceSession:
        levels.append((Path(path).stem, options.graph_optimization_level))
        return real(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    bench(tiny, SHAPE, BenchConfig(warmup=1, runs=2, threads=(1,), profile_runs=0))
    assert levels == [
        ("one", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("one", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        ("four", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("four", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
    ]
    with pytest.raises(BadInputError, match="layouts must be among blocked, plain"):
        bench(tiny, SHAPE, BenchConfig(threads=(1,), layouts=("arm",)))


def test_breakdown_names_the_ops_and_stays_within_wall_time(tiny: dict[str, Path]) -> None:
    report = bench(tiny, SHAPE, FAST)
    one, four = report.breakdown["one"], report.breakdown["four"]
    assert {"Conv", "Mul"} <= set(four)
    assert all(ms >= 0 for ms in four.values()) and four["Mul"] > 0
    assert sum(four.values()) < 20 * report.timing("four", 1).mean_ms
    assert set(one) <= set(four) | {"Identity"}


def test_rounds_interleave_models_and_min_time_extends_them(tiny: dict[str, Path]) -> None:
    calls: list[str] = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, *_: object) -> None:
            calls.append(self.name)

    sessions = {"a": Session("a"), "b": Session("b"), "c": Session("c")}
    config = BenchConfig(warmup=1, runs=3, min_time=0.0)
    feeds: dict[str, dict[str, object]] = {"a": {}, "b": {}, "c": {}}
    samples = time_interleaved(sessions, feeds, config)  # type: ignore[arg-type]
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 4 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1
    assert [len(s) for s in samples.values()] == [3, 3, 3]


def test_runs_are_timed_by_the_clock_given() -> None:
    ticks = iter(range(1000))

    class Session:
        def run(self, *_: object) -> None:
            next(ticks)

    config = BenchConfig(warmup=1, runs=4, min_time=0.0)
    feeds: dict[str, dict[str, object]] = {"a": {}}
    clock = lambda: float(next(ticks))  # noqa: E731
    samples = time_interleaved({"a": Session()}, feeds, config, clock=clock)  # type: ignore[arg-type]
    assert samples == {"a": [2.0, 2.0, 2.0, 2.0]}
    assert set(CLOCKS) == {"wall", "thread"}


def test_bad_inputs_are_bad_input_errors(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        bench({"gone": tmp_path / "gone.onnx"}, SHAPE, FAST)
    with pytest.raises(BadInputError, match="cannot feed"):
        bench(tiny, (1, 3, 16, 16), FAST)
    with pytest.raises(BadInputError, match="dynamic"):
        bench(tiny, None, FAST)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(BadInputError, match="cannot load"):
        bench({"garbage": garbage}, SHAPE, FAST)


def test_cli_times_onnx_files_as_json_and_html(tiny: dict[str, Path], tmp_path: Path) -> None:
    args = ["bench", "--onnx", str(tiny["one"]), "--onnx", str(tiny["four"])]
    args += ["--input-shape", "1,8,16,16", "--threads", "1", "--runs", "4", "--warmup", "1"]
    page = tmp_path / "bench.html"
    result = CliRunner().invoke(cli, [*args, "--profile-runs", "2", "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(t["name"], t["layout"]) for t in data["timings"]] == [
        ("one", "blocked"),
        ("one", "plain"),
        ("four", "blocked"),
        ("four", "plain"),
    ]
    assert set(data["breakdown"]) == {"one", "four"}
    text = page.read_text()
    assert '<section id="latency">' in text and text.count('data-figure="latency"') == 1
    assert all(f"<td>{t['name']}@{t['layout']}</td>" in text for t in data["timings"])


@pytest.mark.parametrize("flag", ["--onnx", "--pte", "--tflite", "--ncnn-param"])
def test_cli_refuses_html_over_a_timed_file(flag: str, tmp_path: Path) -> None:
    timed = tmp_path / "model.bin"
    timed.write_bytes(b"model")
    result = CliRunner().invoke(cli, ["bench", flag, str(timed), "--html", str(timed)])
    assert result.exit_code == 2, result.output
    assert "also an input of this run" in result.output
    assert timed.read_bytes() == b"model"


def _fake_export(passed: bool) -> Callable[..., SimpleNamespace]:
    """Stands in for the export pipeline: writes a tiny model where the job asks."""

    def export_onnx(job: OnnxJob, progress: object = None) -> SimpleNamespace:
        _model(job.output, 2 if job.rewrite else 3)
        artifact = {"path": str(job.output)} if passed else None
        return SimpleNamespace(passed=passed, artifact=artifact, ca_blocks=[], passes=[])

    return export_onnx


def test_cli_exports_stock_rewritten_and_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OnnxJob, "run", _fake_export(passed=True))
    args = ["bench", "seed_ca", "--baseline", "mobilenetv2", "--input-shape", "1,8,16,16"]
    result = CliRunner().invoke(cli, [*args, "--threads", "1", "--runs", "3", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.stdout.splitlines() if "." in line]
    assert rows[:4] == ["stock", "ort-x86", "ort-plain", "baseline"]
    assert "CA block forms in 'ort-plain':\n  (no CA block)" in result.stdout
    assert "op time" in result.stdout


def test_cli_failed_export_gate_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OnnxJob, "run", _fake_export(passed=False))
    result = CliRunner().invoke(cli, ["bench", "seed_ca", "--threads", "1"])
    assert result.exit_code == 1, result.output
    assert "did not pass" in result.output


def _fake_ncnn(refuse: str) -> Callable[..., SimpleNamespace]:
    """Stands in for the ncnn pipeline: refuses the size-safe or the fixed-size form."""

    def export_ncnn(job: NcnnJob, progress: object = None) -> SimpleNamespace:
        if (job.dynamic and job.rewrite) == (refuse == "size-safe"):
            raise BadInputError(f"no {refuse} form")
        job.files[0].write_text("7767517")
        return SimpleNamespace(passed=True, artifact={}, ca_blocks=[], passes=[])

    return export_ncnn


@pytest.mark.parametrize("refuse", ["size-safe", "fixed-size"])
def test_ncnn_form_refused(refuse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that cannot be size-safe in ncnn is timed in its other forms, with a warning;
    any other refused ncnn export fails the run."""
    monkeypatch.setattr(OnnxJob, "run", _fake_export(passed=True))
    monkeypatch.setattr(NcnnJob, "run", _fake_ncnn(refuse))
    timed: list[str] = []

    def fake_bench(models: dict[str, Path], *args: object, **kwargs: object) -> SimpleNamespace:
        timed.extend(models)
        return SimpleNamespace()

    monkeypatch.setattr(bench_pipeline, "bench", fake_bench)
    job = BenchJob("seed_ca", (1, 8, 16, 16), FAST, ncnn=True, targets=())
    if refuse == "fixed-size":
        with pytest.raises(BadInputError, match="no fixed-size form"):
            bench_pipeline.run_bench(job)
        return
    bench_pipeline.run_bench(job)
    assert timed == ["stock", "stock.ncnn", "fixed-size.ncnn"]
    assert job.warnings == ["not timing the size-safe ncnn form: no size-safe form"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="nothing-to-time"),
        pytest.param(["--onnx", "missing.onnx"], id="missing-file"),
        pytest.param(["no_such_model"], id="unknown-model"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["bench", *args, "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output


def test_cli_rejects_a_bad_thread_list() -> None:
    result = CliRunner().invoke(cli, ["bench", "seed_ca", "--threads", "1,zero"])
    assert result.exit_code == 2
    assert "comma-separated" in result.output
