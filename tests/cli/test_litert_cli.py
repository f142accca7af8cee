"""``ca-export litert``: help and the error paths that need no conversion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ca_export.export import litert
from ca_export.files import FILE_KINDS
from cli.main import cli

SMALL = ("--input-shape", "1,3,32,32")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_litert_help_shows_an_example() -> None:
    result = run("litert", "--help")
    assert result.exit_code == 0
    assert "ca-export litert mobilenetv2_ca -o" in result.output
    assert "--channels-last-io" in result.output


def test_litert_refuses_another_suffix(tmp_path: Path) -> None:
    result = run("litert", "seed_ca", *SMALL, "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 2
    assert "saved as .tflite" in result.output
    assert not list(tmp_path.iterdir())


def test_litert_refuses_dynamic_with_the_reason(tmp_path: Path) -> None:
    result = run("litert", "seed_ca", *SMALL, "-o", str(tmp_path / "m.tflite"), "--dynamic")
    assert result.exit_code == 2
    assert "static shapes only" in result.output
    assert not list(tmp_path.iterdir())


def test_litert_without_the_extra_gives_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = dataclasses.replace(litert.EXTRA, modules=("ca_export_no_such_module",))
    monkeypatch.setattr(litert, "EXTRA", missing)
    result = run("litert", "seed_ca", *SMALL, "-o", str(tmp_path / "m.tflite"))
    assert result.exit_code == 2
    assert 'pip install -e ".[litert]"' in result.output
    assert not list(tmp_path.iterdir())


def test_litert_does_not_replace_a_file_that_is_not_a_tflite(tmp_path: Path) -> None:
    mine = tmp_path / "notes.tflite"
    mine.write_text("my notes")
    result = run("litert", "seed_ca", *SMALL, "-o", str(mine))
    assert result.exit_code == 2, result.output
    assert mine.read_text() == "my notes"


def test_a_tflite_is_a_file_litert_may_replace(tmp_path: Path) -> None:
    model = tmp_path / "old.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(24))
    assert FILE_KINDS["tflite"](model)
    model.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(24))
    assert not FILE_KINDS["tflite"](model)
