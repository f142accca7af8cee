"""Fault injection: every command against bad paths, bad files, odd models and signals.

Each case asserts the exit code, one clear error line, no traceback, no user file
changed and no stray file left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from ca_export.errors import BadInputError
from ca_export.files import Output, guard
from cli.main import cli

SMALL = ["--input-shape", "1,3,32,32"]

USER_MODELS = """
import sys
import torch
import torch.nn as nn


class Pair(nn.Module):
    def __init__(self, outputs=10):
        super().__init__()
        self.conv = nn.Conv2d(3, outputs, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)), None


class Nothing(nn.Module):
    def forward(self, x):
        return None


class FailsWhenRun(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if not torch.compiler.is_exporting():
            raise RuntimeError("only traceable")
        return self.conv(x)


def pair():
    return Pair()


def five_classes():
    return Pair(5)


def nothing():
    return Nothing()


def exits():
    sys.exit(3)


def fails_when_run():
    return FailsWhenRun()
"""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error(result: Result, code: int, pattern: str) -> None:
    """The run exited with ``code`` and said why in one line matching ``pattern``."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert len(errors) == 1, result.stderr
    assert pattern in errors[0], errors[0]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones too) with its digest and mode."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def work(tmp_path: Path, exported: Callable, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a seed export (``seed.onnx``), user models and a notes file.

    The test runs with TMPDIR set to an empty folder (outside ``work``), which must be
    empty again when it ends: nothing is left in TMPDIR after any failure.
    """
    _, onnx_path = exported("seed_ca", False)
    shutil.copy(onnx_path, tmp_path / "seed.onnx")
    (tmp_path / "models.py").write_text(USER_MODELS)
    (tmp_path / "notes.txt").write_text("my notes\n")
    folder = tmp_path.parent / f"{tmp_path.name}-tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield tmp_path
    assert sorted(p.name for p in folder.iterdir() if p.name not in ORT_SESSION_FILE) == []


ORT_SESSION_FILE = {".ses"}
"""ONNX Runtime's telemetry session file: written in TMPDIR when a process imports
onnxruntime (before any command runs) and kept for the next process, so not a file a run
leaves behind; a subprocess test's fresh process writes it."""


@pytest.mark.parametrize(
    "args",
    [
        ["onnx", "seed_ca", *SMALL, "-o", "seed.onnx", "--report", "seed.onnx"],
        ["onnx", "seed_ca", *SMALL, "-o", "out.onnx", "--report", "seed.onnx"],
        ["onnx", "models.py:pair", *SMALL, "-o", "models.py"],
        ["onnx", "seed_ca", *SMALL, "-o", "out.onnx", "--weights", "out.onnx"],
        ["optimize", "seed.onnx", "-o", "opt.onnx", "--report", "seed.onnx"],
        ["verify", "seed_ca", "seed.onnx", *SMALL, "--report", "seed.onnx"],
        ["verify", "seed_ca", "seed.onnx", *SMALL, "--junit", "seed.onnx"],
        ["verify", "seed_ca", "seed.onnx", *SMALL, "--markdown", "seed.onnx"],
        ["verify", "seed_ca", "seed.onnx", *SMALL, "--report", "r.json", "--junit", "r.json"],
        ["coreml", "seed_ca", *SMALL, "-o", "x.mlpackage", "--report", "models.py"],
    ],
    ids=[
        "onnx-report-is-output",
        "onnx-report-is-other-file",
        "onnx-output-is-model-file",
        "onnx-output-is-weights",
        "optimize-report-is-input",
        "verify-report-is-artifact",
        "verify-junit-is-artifact",
        "verify-markdown-is-artifact",
        "verify-two-reports-one-path",
        "coreml-report-is-model-file",
    ],
)
def test_path_clash_exits_2_and_changes_nothing(
    work: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    before = snapshot(work)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot(work) == before


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["onnx", "seed_ca", *SMALL, "-o", "notes.txt"], "is not a onnx file"),
        (["onnx", "seed_ca", *SMALL, "-o", "o.onnx", "--report", "notes.txt"], "not a json"),
        (["verify", "seed_ca", "seed.onnx", *SMALL, "--junit", "notes.txt"], "not a junit"),
        (["verify", "seed_ca", "seed.onnx", *SMALL, "--markdown", "notes.txt"], "markdown"),
        (["coreml", "seed_ca", *SMALL, "-o", "notes.txt"], "is saved as .mlpackage"),
    ],
)
def test_only_a_file_of_the_written_kind_is_replaced(
    work: Path, args: list[str], pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    before = snapshot(work)
    one_error(run(*args), 2, pattern)
    assert snapshot(work) == before


def test_coreml_keeps_a_folder_that_is_not_a_package(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "full.mlpackage").mkdir()
    (work / "full.mlpackage" / "keep.txt").write_text("keep\n")
    before = snapshot(work)
    one_error(run("coreml", "seed_ca", *SMALL, "-o", "full.mlpackage"), 2, "no Manifest.json")
    assert snapshot(work) == before


def _truncated(work: Path) -> Path:
    path = work / "half.onnx"
    data = (work / "seed.onnx").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(work: Path) -> Path:
    path = work / "empty.onnx"
    path.write_bytes(b"")
    return path


def _text(work: Path) -> Path:
    path = work / "text.onnx"
    path.write_text("hello\n")
    return path


def _folder(work: Path) -> Path:
    path = work / "folder.onnx"
    path.mkdir()
    return path


def _missing_data(work: Path) -> Path:
    model = onnx.load(work / "seed.onnx")
    onnx.save_model(model, work / "ext.onnx", save_as_external_data=True, location="ext.onnx.data")
    (work / "ext.onnx.data").unlink()
    return work / "ext.onnx"


def _custom_op(work: Path) -> Path:
    model = onnx.load(work / "seed.onnx")
    node = model.graph.node[0]
    node.op_type, node.domain = "NoSuchOp", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, work / "custom.onnx")
    return work / "custom.onnx"


BAD_ONNX = {
    "truncated": _truncated,
    "empty": _empty,
    "text": _text,
    "folder": _folder,
    "missing-external-data": _missing_data,
    "unknown-op": _custom_op,
}


@pytest.mark.parametrize("kind", list(BAD_ONNX))
@pytest.mark.parametrize("command", ["optimize", "verify"])
def test_bad_onnx_files_exit_2(
    work: Path, kind: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    bad = BAD_ONNX[kind](work)
    before = snapshot(work)
    if command == "optimize":
        result = run("optimize", bad, "-o", "out.onnx")
    else:
        result = run("verify", "seed_ca", bad, *SMALL)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot(work) == before


def test_core_ml_package_with_an_empty_model_exits_2(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    package = work / "s.mlpackage" / "Data" / "com.apple.CoreML"
    package.mkdir(parents=True)
    (package / "model.mlmodel").write_bytes(b"")
    (work / "s.mlpackage" / "Manifest.json").write_text("{}")
    result = run("verify", "seed_ca", "s.mlpackage", *SMALL)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "is empty"),
        (b"not a checkpoint", "not a PyTorch checkpoint"),
        ("module", "--trust-pickle"),
        ("truncated", "truncated or corrupted"),
        ("missing-key", "missing "),
    ],
)
def test_bad_weights_exit_2_with_one_line(
    work: Path, content: bytes | str, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    path = work / "w.pt"
    if content == "module":
        torch.save(nn.Conv2d(3, 4, 1), path)
    elif content == "truncated":
        torch.save({"conv.weight": torch.zeros(10, 3, 3, 3)}, path)
        path.write_bytes(path.read_bytes()[:100])
    elif content == "missing-key":
        torch.save({"conv.weight": torch.zeros(10, 3, 3, 3)}, path)
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    result = run("inspect", "models.py:pair", *SMALL, "--weights", path)
    one_error(result, 2, pattern)
    assert "none" not in result.stderr


def test_pickled_model_refusal_is_whole_and_names_the_flag(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    torch.save({"model": nn.Sequential(nn.Conv2d(3, 4, 1))}, work / "best.pt")
    before = snapshot(work)
    result = run("onnx", "best.pt", *SMALL, "-o", "out.onnx")
    one_error(result, 2, "only with --trust-pickle")
    assert result.stderr.rstrip().endswith(")")
    assert snapshot(work) == before


@pytest.mark.parametrize(
    ("spec", "code", "pattern"),
    [
        ("models.py:exits", 2, "SystemExit: 3"),
        ("models.py:nothing", 2, "returns no tensor"),
        ("no_such_dir/", 2, "unknown model"),
    ],
)
def test_odd_factories_and_models(
    work: Path, spec: str, code: int, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    before = snapshot(work)
    one_error(run("onnx", spec, *SMALL, "-o", "out.onnx"), code, pattern)
    assert snapshot(work) == before


def test_output_with_none_exports_its_tensors(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    result = run("onnx", "models.py:pair", *SMALL, "-o", "pair.onnx")
    assert result.exit_code == 0, result.output
    assert "output[1] (NoneType) is not a tensor" in result.output
    assert [o.name for o in onnx.load(work / "pair.onnx").graph.output] == ["output"]


def test_unexpected_error_is_exit_3_with_the_stage_and_debug_shows_the_traceback(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    args = ["onnx", "models.py:fails_when_run", *SMALL, "-o", "o.onnx"]
    result = run(*args)
    one_error(result, 3, "error: stage")
    assert not (work / "o.onnx").exists()
    debug = run(*args, "--debug")
    assert debug.exit_code == 3
    assert "Traceback" in debug.stderr


def test_artifact_of_another_model_fails_the_check(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    result = run("verify", "models.py:five_classes", "seed.onnx", *SMALL)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "seed.onnx (float32, onnxruntime-cpu): FAILED" in result.stdout


def test_input_shape_too_large_for_memory_exits_2_before_tracing(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    result = run("onnx", "seed_ca", "--input-shape", "1,3,32768,32768", "-o", "big.onnx")
    one_error(result, 2, "GiB")
    assert "[trace]" not in result.stderr


def test_artifacts_get_the_umask_and_in_place_optimize_keeps_the_mode(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    old = os.umask(0o022)
    try:
        result = run("optimize", "seed.onnx", "-o", "copy.onnx", "--force-write")
        assert result.exit_code == 0, result.output
        assert (work / "copy.onnx").stat().st_mode & 0o777 == 0o644
        os.chmod(work / "copy.onnx", 0o640)
        result = run("optimize", "copy.onnx", "-o", "copy.onnx", "--force-write")
        assert result.exit_code == 0, result.output
        assert (work / "copy.onnx").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def _default_sigint() -> None:
    """A test runner's worker may ignore SIGINT; the CLI under test must not inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signalled(args: list[str], stage: str, signum: int, cwd: Path, delay: float = 0) -> int:
    """Run the CLI in a subprocess, send ``signum`` ``delay`` seconds after ``stage`` starts,
    return its code."""
    code = "from cli.main import main; main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == f"[{stage}]":
                time.sleep(delay)
                proc.send_signal(signum)
                break
        else:
            pytest.fail(f"stage {stage} never started")
        proc.stderr.read()
        return proc.wait(timeout=120)


@pytest.mark.slow
def test_sigterm_during_core_ml_parity_cleans_up_and_exits_143(work: Path) -> None:
    args = ["coreml", "seed_ca", "--input-shape", "1,3,96,96", "-o", "s.mlpackage"]
    before = snapshot(work)
    assert _signalled(args, "mil parity", signal.SIGTERM, work) == 143
    assert snapshot(work) == before
    assert sorted(p.name for p in work.iterdir()) == sorted(["seed.onnx", "models.py", "notes.txt"])


def test_sigint_during_the_onnx_gate_exits_130_and_writes_nothing(work: Path) -> None:
    args = ["onnx", "seed_ca", "--input-shape", "1,3,96,96", "-o", "s.onnx"]
    before = snapshot(work)
    assert _signalled(args, "gate", signal.SIGINT, work) == 130
    assert snapshot(work) == before


NAMES = st.sampled_from(["a.onnx", "b.onnx", "c.json", "sub/../a.onnx"])


@given(reads=st.lists(NAMES, max_size=3), writes=st.lists(NAMES, max_size=3))
def test_guard_refuses_exactly_the_clashes(reads: list[str], writes: list[str]) -> None:
    keys = [os.path.normpath(w) for w in writes]
    clash = len(set(keys)) < len(keys) or bool(set(keys) & {os.path.normpath(r) for r in reads})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "sub").mkdir()
        outputs = [Output(folder / w, "json" if w.endswith(".json") else "onnx") for w in writes]
        try:
            guard([folder / r for r in reads], outputs)
        except BadInputError:
            assert clash
        else:
            assert not clash


def test_user_inputs_that_are_not_arrays_exit_2(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(work / "wrong.npy", np.zeros((2, 2), np.float32))
    for name in ("bad.npy", "wrong.npy"):
        result = run("verify", "seed_ca", "seed.onnx", *SMALL, "--inputs", name)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def _previous_onnx(work: Path, name: str) -> Path:
    """An ONNX file from an earlier run, byte-different from what a run writes now."""
    model = onnx.load(work / "seed.onnx")
    model.metadata_props.add(key="previous", value="run")
    onnx.save(model, work / name)
    return work / name


def _previous_package(work: Path, name: str) -> Path:
    """A Core ML package from an earlier run (ca-export replaces only a folder like it)."""
    (work / name / "Data").mkdir(parents=True)
    (work / name / "Manifest.json").write_text('{"previous": "run"}')
    (work / name / "Data" / "model.mlmodel").write_bytes(b"previous")
    return work / name


def test_a_report_that_cannot_be_staged_leaves_the_previous_artifact(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    _previous_onnx(work, "small.onnx")
    (work / "r.json").write_text('{"previous": "run"}')
    before = snapshot(work)
    mkstemp = tempfile.mkstemp

    def full_disk(*args: object, prefix: str = "", **kwargs: object) -> tuple[int, str]:
        if prefix.startswith(".r.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return mkstemp(*args, prefix=prefix, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    result = run("onnx", "seed_ca", *SMALL, "-o", "small.onnx", "--report", "r.json")
    one_error(result, 2, "cannot write 'r.json': No space left on device")
    assert snapshot(work) == before


def test_a_rename_that_fails_at_the_commit_puts_every_output_back(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    _previous_onnx(work, "small.onnx")
    (work / "r.json").write_text('{"previous": "run"}')
    before = snapshot(work)
    replace = os.replace
    failed: list[str] = []

    def failing(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "r.json" and not failed:
            failed.append(str(src))
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    result = run("onnx", "seed_ca", *SMALL, "-o", "small.onnx", "--report", "r.json")
    one_error(result, 2, "cannot write 'r.json'")
    assert snapshot(work) == before


def test_a_symlinked_output_is_written_through_to_its_target(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "store").mkdir()
    target = _previous_onnx(work, "store/model.onnx")
    old = target.read_bytes()
    (work / "link.onnx").symlink_to(target)
    result = run("onnx", "seed_ca", *SMALL, "-o", "link.onnx")
    assert result.exit_code == 0, result.output
    assert (work / "link.onnx").is_symlink()
    assert os.readlink(work / "link.onnx") == str(target)
    assert target.read_bytes() != old
    onnx.checker.check_model(onnx.load(target))
    assert sorted(p.name for p in (work / "store").iterdir()) == ["model.onnx"]


def test_a_symlink_to_another_filesystem_is_written_there(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store`` stands for another filesystem: a rename between it and ``work`` fails."""
    monkeypatch.chdir(work)
    (work / "store").mkdir()
    target = _previous_onnx(work, "store/model.onnx")
    old = target.read_bytes()
    (work / "link.onnx").symlink_to(target)
    replace, rename = os.replace, os.rename

    def device(path: str | Path) -> bool:
        return (work / "store") in Path(os.path.abspath(path)).parents

    def one_device(real: Callable[[str | Path, str | Path], None]) -> Callable[..., None]:
        def move(src: str | Path, dst: str | Path) -> None:
            if device(src) != device(dst):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
            real(src, dst)

        return move

    monkeypatch.setattr(os, "replace", one_device(replace))
    monkeypatch.setattr(os, "rename", one_device(rename))
    result = run("onnx", "seed_ca", *SMALL, "-o", "link.onnx", "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert (work / "link.onnx").is_symlink()
    assert target.read_bytes() != old


def test_a_symlink_into_a_missing_folder_is_refused_before_any_work(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "link.onnx").symlink_to(work / "gone" / "model.onnx")
    before = snapshot(work)
    result = run("onnx", "seed_ca", *SMALL, "-o", "link.onnx")
    one_error(result, 2, "does not exist")
    assert "[" not in result.stderr
    assert snapshot(work) == before


def test_a_long_legal_output_name_is_written(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    name, report = "n" * 245 + ".onnx", "r" * 245 + ".json"
    result = run("onnx", "seed_ca", *SMALL, "-o", name, "--report", report)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(work / name))
    written = {p.name for p in work.iterdir()} - {"seed.onnx", "models.py", "notes.txt"}
    assert written == {name, report}


def test_an_output_name_over_255_bytes_is_refused_before_any_work(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legal ONNX name whose ``.required_operators.config`` twin cannot exist."""
    monkeypatch.chdir(work)
    result = run("onnx", "seed_ca", *SMALL, "-o", "n" * 245 + ".onnx", "--ort-format")
    one_error(result, 2, "longer than 255 bytes")
    assert "[" not in result.stderr


def _unblock(fifo: Path) -> threading.Timer:
    """After a few seconds, open ``fifo`` for writing and close it: a reader stuck on it
    gets end-of-file, so a test of a run that opens it fails instead of hanging."""

    def poke() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(5, poke)
    timer.start()
    return timer


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_a_named_pipe_as_output_is_refused_without_opening_it(
    work: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    os.mkfifo(work / "pipe")
    args = ["-o", "pipe"] if option == "-o" else ["-o", "out.onnx", "--report", "pipe"]
    timer = _unblock(work / "pipe")
    try:
        result = run("onnx", "seed_ca", *SMALL, *args)
    finally:
        timer.cancel()
    one_error(result, 2, "'pipe' is a named pipe, not a regular file")
    assert stat.S_ISFIFO(os.stat(work / "pipe").st_mode)
    assert not (work / "out.onnx").exists()


def _npz(kind: str, path: Path) -> None:
    if kind == "npy-named-npz":
        with path.open("wb") as handle:
            np.save(handle, np.zeros((1, 3, 32, 32), np.float32))
    elif kind == "truncated":
        np.savez(path, x=np.zeros((1, 3, 32, 32), np.float32))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"PK\x03\x04 not a zip")


@pytest.mark.parametrize("kind", ["npy-named-npz", "truncated", "garbage"])
@pytest.mark.parametrize("option", ["--inputs", "--calibration"])
def test_a_corrupt_npz_exits_2_naming_the_file(
    work: Path, kind: str, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "calib").mkdir()
    _npz(kind, work / "calib" / "bad.npz")
    before = snapshot(work)
    if option == "--inputs":
        result = run("verify", "seed_ca", "seed.onnx", *SMALL, "--inputs", "calib/bad.npz")
    else:
        args = ["--precision", "int8", "--calibration", "calib"]
        result = run("onnx", "seed_ca", *SMALL, "-o", "q.onnx", *args)
    one_error(result, 2, "bad.npz")
    assert snapshot(work) == before


def test_a_full_tmpdir_during_core_ml_conversion_says_so_and_leaves_nothing(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What coremltools does when TMPDIR fills while it writes its temporary package."""
    import coremltools.models.model as ct_model

    monkeypatch.chdir(work)
    tmpdir = Path(tempfile.gettempdir())
    usage = shutil.disk_usage

    def half_written(*_args: object, **_kwargs: object) -> str:
        package = Path(tempfile.mkdtemp(suffix=".mlpackage"))
        (package / "Manifest.json").write_text("{")
        raise RuntimeError("filesystem error: cannot copy: Input/output error")

    def disk_usage(path: str | Path) -> object:
        if tmpdir in [Path(path), *Path(path).parents]:
            return usage(path)._replace(free=0)
        return usage(path)

    monkeypatch.setattr(ct_model, "_create_mlpackage", half_written)
    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    _previous_package(work, "s.mlpackage")
    before = snapshot(work)
    result = run("coreml", "seed_ca", *SMALL, "-o", "s.mlpackage")
    one_error(result, 2, "no space left on device in ")
    assert snapshot(work) == before


def test_sigint_swallowed_inside_coremltools_still_exits_130(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """coremltools reads each node's op name in a bare ``try/except:``: a SIGINT that
    lands there is swallowed (issue 27, item 1). Send one exactly there."""
    monkeypatch.chdir(work)
    name = torch._ops.OpOverload.name
    sent: list[int] = []

    def interrupted(op: torch._ops.OpOverload) -> str:
        caller = sys._getframe(1).f_code.co_filename
        if not sent and caller.endswith(os.path.join("frontend", "torch", "internal_graph.py")):
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return name(op)

    monkeypatch.setattr(torch._ops.OpOverload, "name", interrupted)
    _previous_package(work, "s.mlpackage")
    (work / "r.json").write_text('{"previous": "run"}')
    before = snapshot(work)
    result = run("coreml", "seed_ca", *SMALL, "-o", "s.mlpackage", "--report", "r.json")
    assert sent
    one_error(result, 130, "interrupted (SIGINT)")
    assert "[save]" not in result.stderr
    assert snapshot(work) == before


def _previous_pte(work: Path, name: str) -> Path:
    """An ExecuTorch program from an earlier run (a flatbuffer with the ``ET`` identifier)."""
    (work / name).write_bytes(b"\0\0\0\0ET12previous")
    return work / name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "stage", "delay"),
    [
        ("coreml", "convert", 1.0),
        ("coreml", "mil parity", 0),
        ("onnx", "export", 0.5),
        ("onnx", "simplify", 0),
        ("onnx", "gate", 0),
        ("executorch", "lower", 1.0),
        ("executorch", "gate", 0),
    ],
)
def test_sigint_at_each_stage_keeps_the_previous_outputs(
    work: Path, command: str, stage: str, delay: float
) -> None:
    """SIGINT inside third-party code (conversion, lowering, onnxsim) and at the gates."""
    if command == "executorch":
        from ca_export.export import executorch as et

        if not et.EXTRA.available():
            pytest.skip(et.EXTRA.hint)
    output = {"coreml": "s.mlpackage", "onnx": "s.onnx", "executorch": "s.pte"}[command]
    {"coreml": _previous_package, "onnx": _previous_onnx, "executorch": _previous_pte}[command](
        work, output
    )
    (work / "r.json").write_text('{"previous": "run"}')
    before = snapshot(work)
    args = [command, "seed_ca", "--input-shape", "1,3,64,64", "-o", output, "--report", "r.json"]
    assert _signalled(args, stage, signal.SIGINT, work, delay) == 130
    assert snapshot(work) == before
