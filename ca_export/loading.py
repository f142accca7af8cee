"""Model specs, factories, checkpoints and input shapes, as the user gives them."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ca_export.errors import BadInputError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to trace, with where it came from and what was done to it."""

    module: nn.Module
    spec: str
    notices: list[str] = field(default_factory=list)


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """``"1,3,224,224"`` as a tuple of four positive ints."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise BadInputError(f"input shape {text!r} is not four comma-separated integers") from None
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise BadInputError(f"input shape {text!r} must be four positive integers N,C,H,W")
    return dims  # type: ignore[return-value]


def resolve_factory(spec: str) -> Callable[[], Any]:
    """The factory a spec names: a sample name, ``file.py:factory`` or ``module:factory``."""
    if ":" not in spec:
        from sample_models import REGISTRY

        if spec not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise BadInputError(f"unknown model {spec!r}; sample models are: {known}")
        return REGISTRY[spec]
    where, name = spec.rsplit(":", 1)
    if not where or not name:
        raise BadInputError(f"model spec {spec!r} needs the form file.py:factory or module:factory")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except (ImportError, ValueError, TypeError) as err:
            raise BadInputError(f"cannot import module {where!r}: {err}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise BadInputError(f"{where!r} has no callable {name!r}")
    return factory


def _import_file(path: Path) -> Any:
    """Import a Python file as a module."""
    if not path.is_file():
        raise BadInputError(f"model file {str(path)!r} does not exist")
    name = f"ca_export_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInputError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise BadInputError(f"importing {str(path)!r} failed: {_one_line(err)}") from None
    return module


def load_model(spec: str, weights: Path | None = None) -> LoadedModel:
    """Build the model a spec names, load weights, and put it in eval mode."""
    factory = resolve_factory(spec)
    try:
        module = factory()
    except BadInputError:
        raise
    except Exception as err:
        raise BadInputError(f"factory for {spec!r} failed: {_one_line(err)}") from None
    if not isinstance(module, nn.Module):
        got = type(module).__name__
        raise BadInputError(f"factory for {spec!r} returned {got}, not a torch.nn.Module")
    loaded = LoadedModel(module, spec)
    if weights is not None:
        load_weights(module, weights)
    if module.training:
        loaded.notices.append("model was in train mode; switched to eval mode for export")
        log.info(loaded.notices[-1])
    module.eval()
    return loaded


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a state dict (plain, or under ``state_dict``/``model``, ``module.`` stripped)."""
    if not path.is_file():
        raise BadInputError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInputError(f"cannot read checkpoint {str(path)!r}: {_one_line(err)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise BadInputError(
            f"checkpoint does not fit the model: missing {_listing(missing)}; "
            f"unexpected {_listing(unexpected)}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise BadInputError(f"checkpoint does not fit the model: wrong shape for {_listing(wrong)}")
    module.load_state_dict(state)


def _listing(keys: list[str], limit: int = 8) -> str:
    """A short list of keys for an error line."""
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message, with its type."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
