"""The pre-commit hook (``.pre-commit-hooks.yaml``), its entry run as pre-commit runs it:
``entry``, then the hook's ``args``, then the changed files its ``files`` pattern selects.

The fast tests put a recording ``ca-export`` on PATH; the slow one runs the real
``ca-export verify`` on a right and a wrong ``seed_ca`` export."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import action_artifacts
import pytest
import yaml

from ca_export.report import ExportReport

ROOT = Path(__file__).resolve().parents[2]
(HOOK,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())

RECORDING_CLI = """#!/usr/bin/env bash
printf '%s\\037' "$@" >"$CALLS"
"""


def run_hook(
    args: list[str], changed: list[str], cwd: Path, path: str
) -> subprocess.CompletedProcess:
    """The hook's entry as pre-commit runs it on the changed files."""
    files = [f for f in changed if re.search(HOOK["files"], f)]
    env = {"PATH": path, "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", str(cwd))}
    env["CALLS"] = str(cwd / "calls")
    command = [str(ROOT / HOOK["entry"]), *args, *files]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def recording_path(tmp_path: Path) -> str:
    """A PATH whose ``ca-export`` writes its arguments to ``$CALLS``."""
    cli = tmp_path / "bin" / "ca-export"
    cli.parent.mkdir()
    cli.write_text(RECORDING_CLI)
    cli.chmod(0o755)
    return f"{cli.parent}{os.pathsep}{os.environ['PATH']}"


def test_the_hook_selects_artifacts_only() -> None:
    assert HOOK["language"] == "script"
    assert HOOK["require_serial"] is True
    assert os.access(ROOT / HOOK["entry"], os.X_OK)
    artifacts = ["a.onnx", "m/b.ort", "c.pte", "d.mlmodel", "e.mlpackage/Manifest.json"]
    others = ["net.py", "best.pt", "onnx_notes.md", "f.onnx.json", "mlpackage.txt"]
    assert [f for f in artifacts + others if re.search(HOOK["files"], f)] == artifacts


def test_files_go_to_one_verify_run_and_a_package_counts_once(
    tmp_path: Path, recording_path: str
) -> None:
    changed = [
        "exports/net.onnx",
        "exports/net.mlpackage/Manifest.json",
        "exports/net.mlpackage/Data/com.apple.CoreML/model.mlmodel",
        "exports/net.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
        "train.py",
    ]
    args = ["nets/yolo.py:build", "--weights", "best.pt", "--input-shape", "1,3,320,320"]
    done = run_hook(args, changed, tmp_path, recording_path)
    assert done.returncode == 0, done.stderr
    recorded = (tmp_path / "calls").read_text().split("\x1f")[:-1]
    assert recorded == ["verify", *args, "exports/net.onnx", "exports/net.mlpackage"]


def test_no_artifact_changed_runs_nothing_and_no_model_is_bad_input(
    tmp_path: Path, recording_path: str
) -> None:
    assert run_hook(["seed_ca"], ["README.md"], tmp_path, recording_path).returncode == 0
    assert not (tmp_path / "calls").exists()
    done = run_hook([], ["a.onnx"], tmp_path, recording_path)
    assert done.returncode == 2
    assert "give MODEL" in done.stderr


@pytest.fixture(scope="module")
def seed_artifacts(
    exported: Callable[..., tuple[ExportReport, Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """``seed_ca`` exports, right and wrong (``action_artifacts.seed_artifacts``)."""
    return action_artifacts.seed_artifacts(exported, tmp_path_factory.mktemp("action"))


@pytest.mark.slow
def test_the_hook_passes_a_right_artifact_and_fails_a_wrong_one(
    seed_artifacts: tuple[Path, Path, Path],
) -> None:
    static, _, wrong = seed_artifacts
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    right = run_hook(["seed_ca"], [static.name, "notes.md"], static.parent, path)
    assert right.returncode == 0, right.stdout + right.stderr
    both = run_hook(["seed_ca"], [static.name, wrong.name], static.parent, path)
    assert both.returncode == 1, both.stdout + both.stderr
    assert f"{wrong.name} (float32, onnxruntime-cpu): FAILED" in both.stdout
    assert f"{static.name} (float32, onnxruntime-cpu): passed" in both.stdout
