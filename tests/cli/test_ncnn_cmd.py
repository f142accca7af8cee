"""``ca-export ncnn``'s front end: help, the missing extra, bad output names, and the
stock-conversion danger ``inspect`` names (the conversion itself: tests/pipeline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca_export.export import ncnn
from cli.main import cli


def test_help_names_the_files_and_fixed_size() -> None:
    done = CliRunner().invoke(cli, ["ncnn", "--help"])
    assert done.exit_code == 0
    assert "--fixed-size" in done.output and ".ncnn.param" in done.output


def test_without_the_extra_exit_2_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = dataclasses.replace(ncnn.EXTRA, modules=("ca_export_no_such_module",))
    monkeypatch.setattr(ncnn, "EXTRA", missing)
    done = CliRunner().invoke(cli, ["ncnn", "seed_ca", "-o", str(tmp_path / "m")])
    assert done.exit_code == 2
    assert 'pip install -e ".[ncnn]"' in done.output
    assert not list(tmp_path.iterdir())


def test_refuses_to_replace_a_file_that_is_not_ncnn(tmp_path: Path) -> None:
    (tmp_path / "m.ncnn.bin").write_bytes(b"user data")
    done = CliRunner().invoke(cli, ["ncnn", "seed_ca", "-o", str(tmp_path / "m.ncnn.param")])
    assert done.exit_code == 2
    assert (tmp_path / "m.ncnn.bin").read_bytes() == b"user data"


@pytest.mark.slow
def test_inspect_names_the_stock_conversion_danger() -> None:
    done = CliRunner().invoke(cli, ["inspect", "seed_ca", "--input-shape", "1,3,32,32"])
    assert done.exit_code == 0, done.output
    assert "baked into a Slice" in done.output


def test_inspect_of_a_model_without_ca_does_not(tmp_path: Path) -> None:
    factory = tmp_path / "plain.py"
    factory.write_text(
        "import torch\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()\n"
    )
    done = CliRunner().invoke(cli, ["inspect", f"{factory}:build", "--input-shape", "1,3,32,32"])
    assert done.exit_code == 0, done.output
    assert "baked into a Slice" not in done.output
