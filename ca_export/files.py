"""Every file a run writes: clash checks before any work, atomic writes, normal permissions.

Rules, checked by ``guard`` before a run does anything heavy:

1. No path is written twice in one run, and no written path is one the run reads
   (the model file, weights, inputs, artifacts under test), except an artifact the
   user asked to replace in place (``optimize IN -o IN``).
2. An existing output is replaced only when it is what the command writes: an ONNX
   file for ``onnx``, a folder with a ``Manifest.json`` for ``mlpackage``, a JSON
   report for ``json``, and so on. Anything else is the user's and stays.
3. Files are written under a temporary name in the same folder and renamed into
   place, so a failed or interrupted run never leaves a partial file under the
   requested name. A new file gets the mode a plain ``open`` would give it under the
   user's umask; a replaced file keeps its mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx

from ca_export.errors import BadInputError

MARKDOWN_HEADING = "### ca-export verify:"
"""How every Markdown summary ``verify`` writes begins."""


@dataclass(frozen=True)
class Output:
    """A path a run will write, and the kind of file it writes there."""

    path: Path
    kind: str


def _is_onnx(path: Path) -> bool:
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return False
    return bool(model.graph.node) or bool(model.graph.output)


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def _starts_with(*prefixes: str) -> Callable[[Path], bool]:
    def check(path: Path) -> bool:
        try:
            with path.open("rb") as handle:
                head = handle.read(256).decode("utf-8", errors="replace").lstrip()
        except OSError:
            return False
        return head.startswith(prefixes)

    return check


def _is_mlmodel(path: Path) -> bool:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception:
        return False
    return spec.specificationVersion > 0


def _head(path: Path) -> bytes:
    """The file's first 8 bytes (fewer for a shorter or unreadable file)."""
    try:
        with path.open("rb") as handle:
            return handle.read(8)
    except OSError:
        return b""


def _is_pte(path: Path) -> bool:
    """An ExecuTorch program: a flatbuffer whose file identifier starts with ``ET``."""
    head = _head(path)
    return len(head) == 8 and head[4:6] == b"ET"


def _is_ort(path: Path) -> bool:
    """An ONNX Runtime format model: a flatbuffer with the file identifier ``ORTM``."""
    head = _head(path)
    return len(head) == 8 and head[4:8] == b"ORTM"


FILE_KINDS: dict[str, Callable[[Path], bool]] = {
    "onnx": _is_onnx,
    "ort": _is_ort,
    "ort_config": _starts_with("# Generated from model/s:"),
    "mlmodel": _is_mlmodel,
    "pte": _is_pte,
    "json": _is_json,
    "junit": _starts_with("<?xml", "<testsuites"),
    "markdown": _starts_with(MARKDOWN_HEADING),
}
"""File kinds a run writes, each with the test an existing file must pass to be replaced."""


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def guard(reads: Iterable[Path], writes: Iterable[Output], in_place: Iterable[Path] = ()) -> None:
    """Refuse (exit 2) a run whose outputs clash or would replace a file that is not theirs."""
    read_keys = {_key(p): p for p in reads}
    allowed = {_key(p) for p in in_place}
    seen: dict[str, Path] = {}
    for out in writes:
        key = _key(out.path)
        if key in seen:
            raise BadInputError(f"{str(out.path)!r} is given as two outputs of the same run")
        seen[key] = out.path
        if key in read_keys and key not in allowed:
            raise BadInputError(
                f"output {str(out.path)!r} is also an input of this run ({read_keys[key]}); "
                "choose another output path"
            )
        _check_replaceable(out)


def _check_replaceable(out: Output) -> None:
    """An existing output must be what the command writes; otherwise it is left alone."""
    path = out.path
    if out.kind == "mlpackage":
        if path.is_file():
            raise BadInputError(f"output {str(path)!r} is a file, not a Core ML package")
        if path.is_dir() and not (path / "Manifest.json").is_file():
            raise BadInputError(
                f"output {str(path)!r} is a folder but not a Core ML package (no Manifest.json); "
                "ca-export replaces only a package it could have written"
            )
        check_writable(path.with_name(f".{path.name}.tmp"))
        return
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a folder")
    check_writable(path)
    if path.exists() and not FILE_KINDS[out.kind](path):
        raise BadInputError(
            f"output {str(path)!r} exists and is not a {out.kind} file; ca-export replaces only "
            "a file of the kind it writes"
        )


def check_writable(path: Path) -> None:
    """Fail early, before any heavy work, if ``path`` cannot be written."""
    parent = path.resolve().parent
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a directory")
    if not parent.is_dir():
        raise BadInputError(f"output folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"output folder {str(parent)!r} is not writable")


def _new_file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _mode_for(path: Path) -> int:
    """A replaced file keeps its mode; a new one gets the umask's."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return _new_file_mode()


def write_atomic(data: bytes, path: Path) -> dict[str, object]:
    """Write atomically: a temporary file in the same folder, then a rename."""
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_text(text: str, path: Path) -> None:
    """Write a text report atomically."""
    write_atomic(text.encode(), path)


PROTOBUF_LIMIT = 2**31 - 2**24
"""Largest ONNX file written as one protobuf (protobuf caps at 2 GiB; 16 MiB headroom)."""


def write_onnx(
    model: onnx.ModelProto, path: Path, limit: int = PROTOBUF_LIMIT
) -> dict[str, object]:
    """Write an ONNX model atomically; past ``limit`` its tensors go to ``<path>.data``."""
    if model.ByteSize() < limit:
        return write_atomic(model.SerializeToString(), path)
    folder = path.resolve().parent
    data_name = f"{path.name}.data"
    mode = _mode_for(path)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=folder) as tmp:
            staged = Path(tmp) / path.name
            onnx.save_model(
                model,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            for name in (data_name, path.name):
                os.chmod(Path(tmp) / name, mode)
            os.replace(Path(tmp) / data_name, folder / data_name)
            os.replace(staged, path)
    except OSError as err:
        raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size + (folder / data_name).stat().st_size
    return {"path": str(path), "bytes": size, "sha256": digest, "external_data": data_name}


def scratch_folder(output: Path) -> Path:
    """A hidden temporary folder beside ``output``; the caller removes it (``remove_tree``)."""
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.resolve().parent))


def remove_tree(folder: Path) -> None:
    """Remove a scratch folder and everything in it."""
    shutil.rmtree(folder, ignore_errors=True)


def publish(staged: Path, output: Path, scratch: Path) -> None:
    """Rename a checked file or package into place with normal permissions.

    A package it replaces is first moved into ``scratch`` (removed with it).
    """
    file_mode = _new_file_mode()
    if staged.is_dir():
        os.chmod(staged, file_mode | ((file_mode & 0o444) >> 2))
        for item in staged.rglob("*"):
            mode = file_mode | ((file_mode & 0o444) >> 2) if item.is_dir() else file_mode
            os.chmod(item, mode)
    else:
        os.chmod(staged, _mode_for(output))
    if output.is_dir():
        os.replace(output, scratch / "replaced")
    os.replace(staged, output)
