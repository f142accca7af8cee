"""Model specs, factories, checkpoints and input shapes, as the user gives them.

A MODEL is a sample name, ``path/to/file.py:factory`` (imported the way ``python
path/to/file.py`` run from the current folder would see it: the current folder and
the file's own folder are importable, and a file inside a package is imported as part
of it), ``package.module:factory``, or a checkpoint file holding a pickled module
(loaded only with ``trust_pickle``: unpickling runs code from the file).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
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
    return dims


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")
"""File suffixes that make a MODEL spec a checkpoint rather than a sample name."""


def is_checkpoint(spec: str) -> bool:
    """Whether a MODEL spec names a checkpoint file (a pickled module)."""
    return ":" not in spec and Path(spec).suffix.lower() in CHECKPOINT_SUFFIXES


def model_files(spec: str, weights: Path | None = None) -> list[Path]:
    """The files a model spec (and its weights) reads: a checkpoint or a factory's file."""
    files = [weights] if weights is not None else []
    if is_checkpoint(spec):
        files.append(Path(spec))
    elif ":" in spec:
        where = spec.rsplit(":", 1)[0]
        if where.endswith(".py") or "/" in where or "\\" in where:
            files.append(Path(where))
    return files


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
    _importable(Path.cwd())
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except (ImportError, ValueError, TypeError) as err:
            raise BadInputError(f"cannot import module {where!r}: {err}") from None
        except (Exception, SystemExit) as err:
            raise BadInputError(f"importing {where!r} failed: {_one_line(err)}") from None
    factory: object = getattr(module, name, None)
    if not callable(factory):
        raise BadInputError(f"{where!r} has no callable {name!r}")
    return factory


def _importable(folder: Path) -> None:
    """Put ``folder`` on the import path (once)."""
    text = str(folder.resolve())
    if text not in sys.path:
        sys.path.insert(0, text)


def _package_name(path: Path) -> str | None:
    """``models.yolo`` for ``models/yolo.py`` under the current folder, if each folder
    between them is a package; otherwise None."""
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return None
    parts = relative.with_suffix("").parts
    folder = Path.cwd()
    for part in parts[:-1]:
        folder = folder / part
        if not (folder / "__init__.py").is_file():
            return None
    return ".".join(parts) if len(parts) > 1 and all(p.isidentifier() for p in parts) else None


def _import_file(path: Path) -> Any:
    """Import a Python file as a module, its own folder importable."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise BadInputError(f"model file {str(path)!r} {what}")
    _importable(path.parent)
    dotted = _package_name(path)
    try:
        if dotted is not None:
            return importlib.import_module(dotted)
        name = f"ca_export_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise BadInputError(f"cannot import {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BadInputError:
        raise
    except (Exception, SystemExit) as err:
        raise BadInputError(f"importing {str(path)!r} failed: {_one_line(err)}") from None
    return module


def load_model(spec: str, weights: Path | None = None, trust_pickle: bool = False) -> LoadedModel:
    """Build (or unpickle) the model a spec names, load weights, and put it in eval mode."""
    notices: list[str] = []
    if is_checkpoint(spec):
        module = load_pickled_module(Path(spec), trust_pickle, notices)
    else:
        factory = resolve_factory(spec)
        try:
            module = factory()
        except BadInputError:
            raise
        except (Exception, SystemExit) as err:
            raise BadInputError(f"factory for {spec!r} failed: {_one_line(err)}") from None
    if not isinstance(module, nn.Module):
        got = type(module).__name__
        raise BadInputError(f"factory for {spec!r} returned {got}, not a torch.nn.Module")
    loaded = LoadedModel(module, spec, notices)
    if weights is not None:
        load_weights(module, weights)
    if module.training:
        loaded.notices.append("model was in train mode; switched to eval mode for export")
        log.info(loaded.notices[-1])
    module.eval()
    return loaded


PICKLE_KEYS = ("ema", "model")
"""Where YOLO-style training checkpoints keep the pickled module, in order of preference."""


def load_pickled_module(path: Path, trust_pickle: bool, notices: list[str]) -> nn.Module:
    """The ``nn.Module`` a checkpoint holds (itself, or under ``ema``/``model``), in fp32."""
    if _load_tensors(path) is not None:
        raise BadInputError(
            f"checkpoint {str(path)!r} holds weights only, no model: give the model's factory "
            "as MODEL and this file as --weights"
        )
    if not trust_pickle:
        raise BadInputError(
            f"checkpoint {str(path)!r} holds a pickled model; unpickling runs code from the "
            "file, so ca-export loads it only with --trust-pickle (use it for files you trust)"
        )
    _importable(Path.cwd())
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise BadInputError(
            f"unpickling {str(path)!r} needs the module {err.name!r}: run from the folder that "
            "holds the model code (the repo root) or add it to PYTHONPATH"
        ) from None
    except Exception as err:
        raise BadInputError(_unreadable(path, err)) from None
    module = saved
    if isinstance(saved, dict):
        found = [saved[k] for k in PICKLE_KEYS if isinstance(saved.get(k), nn.Module)]
        if not found:
            keys = _listing([str(k) for k in saved])
            raise BadInputError(
                f"checkpoint {str(path)!r} holds no nn.Module (itself or under 'ema'/'model'); "
                f"its keys: {keys}"
            )
        module = found[0]
    if not isinstance(module, nn.Module):
        raise BadInputError(f"checkpoint {str(path)!r} holds a {type(module).__name__}, no model")
    dtypes = {p.dtype for p in list(module.parameters()) + list(module.buffers())}
    if torch.float16 in dtypes or torch.bfloat16 in dtypes:
        module = module.float()
        notices.append(f"the model in {path.name} is stored in half precision; cast to fp32")
    return module


def _load_tensors(path: Path) -> Any:
    """A checkpoint loaded with ``weights_only=True``; None if it holds pickled objects."""
    _checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _needs_pickle(err):
            return None
        raise BadInputError(_unreadable(path, err)) from None
    except Exception as err:
        raise BadInputError(_unreadable(path, err)) from None


def _checkpoint_file(path: Path) -> None:
    """A checkpoint path must be a readable, non-empty file."""
    if path.is_dir():
        raise BadInputError(f"checkpoint {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise BadInputError(f"checkpoint {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"checkpoint {str(path)!r} is not readable")
    if path.stat().st_size == 0:
        raise BadInputError(f"checkpoint {str(path)!r} is empty")


def _needs_pickle(err: pickle.UnpicklingError) -> bool:
    """Whether torch refused a valid checkpoint because it holds more than tensors."""
    return "Unsupported global" in str(err)


def _unreadable(path: Path, err: BaseException) -> str:
    """The error line for a checkpoint torch cannot read."""
    if isinstance(err, EOFError):
        return f"cannot read checkpoint {str(path)!r}: the file is truncated"
    if "PytorchStreamReader" in str(err):
        return f"cannot read checkpoint {str(path)!r}: the file is truncated or corrupted"
    if isinstance(err, pickle.UnpicklingError):
        return f"cannot read checkpoint {str(path)!r}: not a PyTorch checkpoint"
    return f"cannot read checkpoint {str(path)!r}: {_one_line(err)}"


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a state dict (plain, or under ``state_dict``/``model``, ``module.`` stripped)."""
    state = _load_tensors(path)
    if state is None:
        raise BadInputError(
            f"checkpoint {str(path)!r} holds pickled objects, not only tensors (a whole model?): "
            "give it as MODEL with --trust-pickle, or save the model's state_dict()"
        )
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
        parts = [f"missing {_listing(missing)}"] if missing else []
        parts += [f"unexpected {_listing(unexpected)}"] if unexpected else []
        raise BadInputError(f"checkpoint does not fit the model: {'; '.join(parts)}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise BadInputError(f"checkpoint does not fit the model: wrong shape for {_listing(wrong)}")
    module.load_state_dict(state)


def _listing(keys: list[str], limit: int = 8) -> str:
    """A short list of keys for an error line."""
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message, with its type."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
