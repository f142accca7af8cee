"""Model specs, checkpoints and input shapes: what works, and one clear error for each misuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ca_export.errors import BadInputError
from ca_export.loading import load_model, parse_input_shape, resolve_factory

FACTORY_FILE = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())

def broken():
    raise RuntimeError("no weights here")

def not_a_module():
    return 42

def training():
    return nn.Sequential(nn.Conv2d(3, 4, 1)).train()
"""


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(FACTORY_FILE)
    return path


def test_sample_name_and_file_and_module_specs(factory_file: Path) -> None:
    assert isinstance(load_model("seed_ca").module, nn.Module)
    assert isinstance(load_model(f"{factory_file}:build").module, nn.Sequential)
    assert callable(resolve_factory("sample_models:seed_ca"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_model", "unknown model 'no_such_model'"),
        ("missing/file.py:build", "does not exist"),
        ("sample_models:nope", "has no callable 'nope'"),
        ("no_such_package.mod:build", "cannot import module"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_model(spec)


def test_factory_failures(factory_file: Path) -> None:
    with pytest.raises(BadInputError, match="failed: RuntimeError: no weights here"):
        load_model(f"{factory_file}:broken")
    with pytest.raises(BadInputError, match="returned int"):
        load_model(f"{factory_file}:not_a_module")


def test_train_mode_model_is_switched_to_eval_with_a_notice(factory_file: Path) -> None:
    loaded = load_model(f"{factory_file}:training")
    assert not loaded.module.training
    assert "eval mode" in loaded.notices[0]


@pytest.mark.parametrize("nesting", ["plain", "state_dict", "model"])
def test_checkpoint_nesting_and_module_prefix(
    factory_file: Path, tmp_path: Path, nesting: str
) -> None:
    source = load_model(f"{factory_file}:build").module
    torch.nn.init.constant_(source[0].weight, 0.5)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    ckpt = tmp_path / "ckpt.pt"
    torch.save(state if nesting == "plain" else {nesting: state}, ckpt)
    loaded = load_model(f"{factory_file}:build", ckpt).module
    assert torch.equal(loaded[0].weight, source[0].weight)


def test_checkpoint_that_does_not_fit_lists_keys(factory_file: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "other.pt"
    torch.save({"0.weight": torch.zeros(4, 3, 1, 1), "extra.bias": torch.zeros(2)}, ckpt)
    with pytest.raises(BadInputError, match=r"missing 0\.bias; unexpected extra\.bias"):
        load_model(f"{factory_file}:build", ckpt)
    torch.save({"0.weight": torch.zeros(5, 3, 1, 1), "0.bias": torch.zeros(5)}, ckpt)
    with pytest.raises(BadInputError, match=r"wrong shape for 0\.weight"):
        load_model(f"{factory_file}:build", ckpt)


def test_unreadable_checkpoint(factory_file: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "junk.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="cannot read checkpoint"):
        load_model(f"{factory_file}:build", ckpt)


def test_input_shape_parsing() -> None:
    assert parse_input_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_input_shape(" 2, 3, 64, 96 ") == (2, 3, 64, 96)
    for bad in ["1,3,224", "1,3,a,224", "0,3,224,224", "1,3,-4,224", ""]:
        with pytest.raises(BadInputError):
            parse_input_shape(bad)
