"""The GitHub Action's script (``action/verify-artifacts.sh``), run from a shell with its
inputs as environment variables, as ``action.yml`` runs it in CI.

The fast tests put a recording ``ca-export`` on PATH to check what the script does with
its inputs and exit codes; the slow ones run the real ``ca-export verify`` on ``seed_ca``
exports, one right and one with a weight scaled by 1.05."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import action_artifacts
import pytest
import yaml

from ca_export.report import ExportReport

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "action" / "verify-artifacts.sh"
ACTION = ROOT / "action.yml"

FAKE_CLI = r"""#!/usr/bin/env bash
# A recording ca-export: "verify MODEL ARTIFACT ... --junit XML --markdown MD" passes,
# fails (1) for an artifact named *wrong*, and with no report for *other*; exits 2 with no
# report for *broken*.
[ "$1" = --version ] && { echo "ca-export, version fake"; exit 0; }
printf '%s\037' "$@" >>"$CALLS"
echo >>"$CALLS"
artifact=$3
while [ "$#" -gt 0 ]; do
  [ "$1" = --junit ] && junit=$2
  [ "$1" = --markdown ] && markdown=$2
  shift
done
case "$artifact" in
  *broken*) echo "error: $artifact is not an ONNX file (<&> \"x\")" >&2; exit 2 ;;
  *other*) echo "check failed: $artifact is not an artifact of this model" >&2; exit 1 ;;
  *wrong*) verdict=FAILED code=1 ;;
  *) verdict=passed code=0 ;;
esac
echo "### ca-export verify: $verdict $artifact" >"$markdown"
echo "<testsuites/>" >"$junit"
exit $code
"""


def run_script(
    env: dict[str, str], cwd: Path, path: str | None = None
) -> subprocess.CompletedProcess:
    """The script under bash, with ``env`` on top of a clean environment."""
    base = {
        "PATH": path or f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "HOME": os.environ.get("HOME", str(cwd)),
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env={**base, **env}, cwd=cwd, capture_output=True, text=True
    )


@pytest.fixture
def fake_cli(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose ``ca-export`` records its calls, and the file the calls go to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "ca-export"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}", tmp_path / "calls"


def calls(path: Path) -> list[list[str]]:
    """The recorded argument lists, one per call."""
    return [line.split("\x1f")[:-1] for line in path.read_text().splitlines()]


def test_each_artifact_gets_its_own_run_with_the_inputs(
    tmp_path: Path, fake_cli: tuple[str, Path]
) -> None:
    path, calls_file = fake_cli
    (tmp_path / "models").mkdir()
    for name in ("a.onnx", "b.onnx", "c.pte"):
        (tmp_path / "models" / name).touch()
    summary = tmp_path / "summary.md"
    outputs = tmp_path / "outputs"
    env = {
        "CALLS": str(calls_file),
        "CA_EXPORT_MODEL": "nets/my net.py:build",
        "CA_EXPORT_ARTIFACTS": "  models/*.onnx\n\nmodels/c.pte\nmodels/a.onnx\n",
        "CA_EXPORT_WEIGHTS": "best.pt",
        "CA_EXPORT_INPUT_SHAPE": "1,3,64,64",
        "CA_EXPORT_SHAPES": "1x3x64x64,2x3x96x64",
        "CA_EXPORT_RTOL": "1e-3",
        "CA_EXPORT_ATOL": "1e-5",
        "CA_EXPORT_ARGS": "--trust-pickle  --allow-unverified",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
    }
    done = run_script(env, tmp_path, path)
    assert done.returncode == 0, done.stderr
    options = [
        *("--weights", "best.pt", "--input-shape", "1,3,64,64"),
        *("--shapes", "1x3x64x64,2x3x96x64", "--rtol", "1e-3", "--atol", "1e-5"),
        *("--trust-pickle", "--allow-unverified"),
    ]
    out = "ca-export-verify"
    reports = [
        ["--junit", f"{out}/models_{name}.xml", "--markdown", f"{out}/models_{name}.md"]
        for name in ("a.onnx", "b.onnx", "c.pte")
    ]
    assert calls(calls_file) == [
        ["verify", "nets/my net.py:build", f"models/{name}", *options, *report]
        for name, report in zip(("a.onnx", "b.onnx", "c.pte"), reports, strict=True)
    ]
    assert outputs.read_text() == "exit-code=0\n"
    assert (tmp_path / out / "models_c.pte.log").is_file()
    assert "3 artifacts, 3 passed, 0 failed" in done.stdout


def test_a_wrong_artifact_fails_the_run_after_the_others_ran(
    tmp_path: Path, fake_cli: tuple[str, Path]
) -> None:
    path, calls_file = fake_cli
    summary = tmp_path / "summary.md"
    outputs = tmp_path / "outputs"
    env = {
        "CALLS": str(calls_file),
        "CA_EXPORT_MODEL": "seed_ca",
        "CA_EXPORT_ARTIFACTS": "wrong.onnx\nright.onnx\nother.onnx",
        "CA_EXPORT_OUTPUT_DIR": "reports",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
    }
    done = run_script(env, tmp_path, path)
    assert done.returncode == 1
    assert [c[2] for c in calls(calls_file)] == ["wrong.onnx", "right.onnx", "other.onnx"]
    assert outputs.read_text() == "exit-code=1\n"
    reports = tmp_path / "reports"
    assert "FAILED wrong.onnx" in (reports / "wrong.onnx.md").read_text()
    assert "3 artifacts, 1 passed, 2 failed" in done.stdout
    # verify refused other.onnx before comparing: the script's reports say it failed.
    (suite,) = ET.parse(reports / "other.onnx.xml").getroot()
    assert (suite.get("failures"), suite.get("errors")) == ("1", "0")
    assert "not an artifact of this model" in suite.find("testcase/failure").get("message")
    assert "### ca-export verify: seed_ca — FAILED" in summary.read_text()


def test_bad_input_and_an_unmatched_glob_exit_2_and_are_summarised(
    tmp_path: Path, fake_cli: tuple[str, Path]
) -> None:
    path, calls_file = fake_cli
    summary = tmp_path / "summary.md"
    env = {
        "CALLS": str(calls_file),
        "CA_EXPORT_MODEL": "seed_ca",
        "CA_EXPORT_ARTIFACTS": "wrong.onnx\nbroken.onnx\nexports/*.pte",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = run_script(env, tmp_path, path)
    assert done.returncode == 2
    assert [c[2] for c in calls(calls_file)] == ["wrong.onnx", "broken.onnx"]
    reason = 'error: broken.onnx is not an ONNX file (<&> "x")'
    text = summary.read_text()
    assert f"broken.onnx: {reason}" in text
    assert "exports/*.pte: no file matches this pattern" in text
    reports = tmp_path / "ca-export-verify"
    assert "error (exit 2)" in (reports / "broken.onnx.md").read_text()
    assert (reports / "exports__.pte.md").is_file()
    (suite,) = ET.parse(reports / "broken.onnx.xml").getroot()
    assert (suite.get("name"), suite.get("errors"), suite.get("failures")) == (
        "broken.onnx",
        "1",
        "0",
    )
    assert suite.find("testcase/error").get("message") == reason
    assert ET.parse(reports / "exports__.pte.xml").getroot()[0].get("errors") == "1"
    assert "FAILED wrong.onnx" in (reports / "wrong.onnx.md").read_text()


def test_no_artifact_no_model_or_no_cli_is_bad_input(
    tmp_path: Path, fake_cli: tuple[str, Path]
) -> None:
    path, calls_file = fake_cli
    env = {"CALLS": str(calls_file), "CA_EXPORT_MODEL": "seed_ca", "CA_EXPORT_ARTIFACTS": "\n \n"}
    done = run_script(env, tmp_path, path)
    assert done.returncode == 2
    assert "names no artifact" in done.stderr
    no_model = run_script({**env, "CA_EXPORT_MODEL": ""}, tmp_path, path)
    assert no_model.returncode == 2
    assert "CA_EXPORT_MODEL" in no_model.stderr
    missing = run_script({**env, "CA_EXPORT_ARTIFACTS": "a.onnx"}, tmp_path, "/usr/bin:/bin")
    assert missing.returncode == 2
    assert "ca-export is not on PATH" in missing.stderr


def test_action_is_a_composite_that_uses_every_input() -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    text = ACTION.read_text().split("\nruns:", 1)[1]
    for name in action["inputs"]:
        assert f"inputs.{name} " in text or f"inputs.{name} }}}}" in text, name
    (verify,) = [s for s in steps if s.get("id") == "verify"]
    assert verify["shell"] == "bash"
    assert "action/verify-artifacts.sh" in verify["run"]
    read = set(re.findall(r"\bCA_EXPORT_[A-Z_]+", SCRIPT.read_text()))
    assert set(verify["env"]) == read
    assert verify["env"]["CA_EXPORT_SOURCE"] == "${{ github.action_path }}"
    upload = steps[steps.index(verify) + 1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "${{ !cancelled() }}"
    assert upload["with"]["path"] == "${{ inputs.output-dir }}"


def junit_counts(path: Path) -> tuple[int, int, int]:
    """Tests, failures and skipped tests over every suite of a JUnit file."""
    suites = ET.parse(path).getroot().findall("testsuite")
    return tuple(sum(int(s.get(key)) for s in suites) for key in ("tests", "failures", "skipped"))


@pytest.fixture(scope="module")
def seed_artifacts(
    exported: Callable[..., tuple[ExportReport, Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """``seed_ca`` exports, right and wrong (``action_artifacts.seed_artifacts``)."""
    return action_artifacts.seed_artifacts(exported, tmp_path_factory.mktemp("action"))


@pytest.mark.slow
def test_right_artifacts_pass_with_junit_and_summary(seed_artifacts: tuple[Path, ...]) -> None:
    static, dynamic, _ = seed_artifacts
    folder = static.parent
    summary = folder / "right_summary.md"
    summary.write_text("")
    env = {
        "CA_EXPORT_MODEL": "seed_ca",
        "CA_EXPORT_ARTIFACTS": f"{static.name}\n{dynamic.name}",
        "CA_EXPORT_INPUT_SHAPE": "1,3,32,32",
        "CA_EXPORT_OUTPUT_DIR": "right",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = run_script(env, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    out = folder / "right"
    assert junit_counts(out / "seed.onnx.xml") == (3, 0, 0)
    # seed_ca's own forward refuses non-square inputs: 3 seeds at 32x32 are compared.
    assert junit_counts(out / "seed_dyn.onnx.xml") == (9, 0, 6)
    assert summary.read_text().count("### ca-export verify: seed_ca — passed") == 2
    assert (out / "seed_dyn.onnx.md").read_text() in summary.read_text()


@pytest.mark.slow
def test_one_wrong_artifact_fails_the_job_and_still_reports(
    seed_artifacts: tuple[Path, ...],
) -> None:
    static, _, wrong = seed_artifacts
    folder = static.parent
    summary = folder / "wrong_summary.md"
    env = {
        "CA_EXPORT_MODEL": "seed_ca",
        "CA_EXPORT_ARTIFACTS": f"{static.name}\n{wrong.name}",
        "CA_EXPORT_OUTPUT_DIR": "wrong",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = run_script(env, folder)
    assert done.returncode == 1, done.stdout + done.stderr
    out = folder / "wrong"
    assert junit_counts(out / "seed.onnx.xml") == (3, 0, 0)
    assert junit_counts(out / "seed_wrong.onnx.xml") == (3, 3, 0)
    text = summary.read_text()
    assert "### ca-export verify: seed_ca — passed" in text
    assert "### ca-export verify: seed_ca — FAILED" in text
    assert "first divergence" in (out / "seed_wrong.onnx.md").read_text()
