"""Model specs, checkpoints and input shapes: what works, and one clear error for each misuse."""

from __future__ import annotations

import sys
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


FORK_COMMON = """
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.conv(x))
"""

FORK_MODEL = """
import torch
import torch.nn as nn

from models.common import Block


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.grid = torch.empty(0)

    def forward(self, x):
        if self.grid.shape[-2:] != x.shape[-2:]:
            self.grid = torch.zeros(x.shape[-2:])
        return x + self.grid, [x]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Block(3, 8)
        self.head = Head()

    def forward(self, x):
        return self.head(self.body(x))


def build():
    return Net()
"""


@pytest.fixture
def fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A YOLO-fork-like repo (``models/`` package, sibling imports), the current folder."""
    models = tmp_path / "repo" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "common.py").write_text(FORK_COMMON)
    (models / "yolo.py").write_text(FORK_MODEL)
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path / "repo"


def test_file_in_a_repo_package_imports_its_siblings(fork: Path) -> None:
    module = load_model("models/yolo.py:build").module
    assert type(module).__module__ == "models.yolo"


def test_file_outside_the_current_folder_imports_from_its_own_folder(
    fork: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fork / "models" / "solo.py").write_text(
        "from common import Block\n\ndef build():\n    return Block(3, 4)\n"
    )
    monkeypatch.chdir(fork.parent)
    assert isinstance(load_model("repo/models/solo.py:build").module, nn.Module)


def test_pickled_fp16_checkpoint_needs_trust_and_loads_as_fp32(fork: Path) -> None:
    net = load_model("models/yolo.py:build").module
    torch.save({"epoch": 3, "model": net.half(), "ema": None}, fork / "best.pt")
    with pytest.raises(BadInputError, match="only with --trust-pickle"):
        load_model("best.pt")
    loaded = load_model("best.pt", trust_pickle=True)
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    assert any("half precision" in n for n in loaded.notices)


def test_pickled_checkpoint_prefers_ema_and_refuses_weights_only(fork: Path) -> None:
    net = load_model("models/yolo.py:build").module
    ema = load_model("models/yolo.py:build").module
    torch.nn.init.constant_(ema.body.conv.weight, 0.25)
    torch.save({"model": net, "ema": ema}, fork / "last.pt")
    loaded = load_model("last.pt", trust_pickle=True).module
    assert torch.equal(loaded.body.conv.weight, ema.body.conv.weight)
    torch.save(net.state_dict(), fork / "weights.pt")
    with pytest.raises(BadInputError, match="holds weights only"):
        load_model("weights.pt", trust_pickle=True)


def test_missing_model_module_says_where_to_run_from(fork: Path, tmp_path: Path) -> None:
    net = load_model("models/yolo.py:build").module
    torch.save({"model": net}, tmp_path / "elsewhere.pt")
    (fork / "models" / "yolo.py").rename(fork / "models" / "gone.py")
    sys.modules.pop("models.yolo")
    with pytest.raises(BadInputError, match=r"needs the module 'models\.yolo'"):
        load_model(str(tmp_path / "elsewhere.pt"), trust_pickle=True)


def test_a_forward_that_caches_tensors_is_traced_on_a_copy(fork: Path) -> None:
    from ca_export.tracing import output_arrays, trace

    net = load_model("models/yolo.py:build").module
    traced = trace(net, (1, 3, 16, 16), dynamic=False)
    assert net.head.grid.numel() == 0
    assert traced.notices == []
    assert len(traced.output_names) == 2
    arrays = output_arrays(net(torch.zeros(1, 3, 16, 16)))
    assert [a.shape for a in arrays] == [(1, 8, 16, 16), (1, 8, 16, 16)]
