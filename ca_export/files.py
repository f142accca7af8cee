"""Every file a run writes: clash checks before any work, atomic writes, normal permissions.

Rules, checked by ``guard`` before a run does anything heavy:

1. No path is written twice in one run, and no written path is one the run reads
   (the model file, weights, inputs, artifacts under test), except an artifact the
   user asked to replace in place (``optimize IN -o IN``).
2. An existing output is replaced only when it is what the command writes: an ONNX
   file for ``onnx``, a folder with a ``Manifest.json`` for ``mlpackage``, a JSON
   report for ``json``, and so on. Anything else is the user's and stays.
3. Files are written under a temporary name beside their target and renamed into
   place, all of a run's files together (``staging``), so a failed or interrupted run
   never leaves a partial file under a requested name nor a set of outputs half
   replaced. A new file gets the mode a plain ``open`` would give it under the user's
   umask; a replaced file keeps its mode.
4. An output that is a symbolic link is written through: its target is replaced (with
   the temporary file beside the target, so the rename stays on one filesystem) and the
   link stays. Named pipes, sockets and devices are refused without being opened.
5. Temporary names fit in 255 bytes whatever the output's name; a run's temporary files
   elsewhere (coremltools', ONNX Runtime's) go to a folder of its own inside TMPDIR
   (``private_tempdir``), removed however the run ends.
"""

from __future__ import annotations

import contextvars
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx

from ca_export import interrupts
from ca_export.errors import BadInputError

MARKDOWN_HEADING = "### ca-export verify:"
"""How every Markdown summary ``verify`` writes begins."""

HTML_HEAD = "<!DOCTYPE html><!-- ca-export report -->"
"""How every HTML report begins."""


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
    return bool(spec.specificationVersion > 0)


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


def _is_tflite(path: Path) -> bool:
    """A LiteRT (TFLite) model: a flatbuffer with the file identifier ``TFL3``."""
    head = _head(path)
    return len(head) == 8 and head[4:8] == b"TFL3"


def _is_ncnn_bin(path: Path) -> bool:
    """ncnn weights: a ``.ncnn.bin`` whose ``.ncnn.param`` beside it is an ncnn param file
    (weights carry no header of their own)."""
    name = path.name
    if not name.endswith(".ncnn.bin"):
        return False
    return _starts_with("7767517")(path.with_name(name[: -len(".bin")] + ".param"))


FILE_KINDS: dict[str, Callable[[Path], bool]] = {
    "onnx": _is_onnx,
    "ort": _is_ort,
    "ort_config": _starts_with("# Generated from model/s:"),
    "mlmodel": _is_mlmodel,
    "pte": _is_pte,
    "tflite": _is_tflite,
    "ncnn_param": _starts_with("7767517"),
    "ncnn_bin": _is_ncnn_bin,
    "json": _is_json,
    "junit": _starts_with("<?xml", "<testsuites"),
    "markdown": _starts_with(MARKDOWN_HEADING),
    "html": _starts_with(HTML_HEAD),
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
    if len(path.name.encode()) > NAME_MAX:
        raise BadInputError(f"output name {path.name[:40]!r}... is longer than {NAME_MAX} bytes")
    _check_not_special(path)
    if out.kind == "mlpackage":
        if path.is_file():
            raise BadInputError(f"output {str(path)!r} is a file, not a Core ML package")
        if path.is_dir() and not (path / "Manifest.json").is_file():
            raise BadInputError(
                f"output {str(path)!r} is a folder but not a Core ML package (no Manifest.json); "
                "ca-export replaces only a package it could have written"
            )
        _check_folder(path)
        return
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a folder")
    check_writable(path)
    if path.exists() and not FILE_KINDS[out.kind](path):
        raise BadInputError(
            f"output {str(path)!r} exists and is not a {out.kind} file; ca-export replaces only "
            "a file of the kind it writes"
        )


SPECIAL_FILES = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _check_not_special(path: Path) -> None:
    """Refuse a named pipe, socket or device (through links too) without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    what = SPECIAL_FILES.get(stat.S_IFMT(mode))
    if what is not None:
        raise BadInputError(f"output {str(path)!r} is {what}, not a regular file")


NAME_MAX = 255
"""Longest file name, in bytes, on the file systems ca-export writes to."""


def check_writable(path: Path) -> None:
    """Fail early, before any heavy work, if ``path`` cannot be written.

    A symbolic link is written through, so its target's folder is the one checked.
    """
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a directory")
    _check_folder(path)


def _check_folder(path: Path) -> None:
    """The output's name fits, and the folder it is written in exists and is writable."""
    parent = path.resolve().parent
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


def _real(path: Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (links are written through)."""
    return Path(os.path.realpath(path))


def _short(name: str, room: int = 200) -> str:
    """``name``, or its first bytes and a digest when it is longer than ``room`` bytes."""
    raw = name.encode()
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return raw[: room - len(digest) - 1].decode(errors="ignore") + "~" + digest


def _aside(target: Path, tag: str) -> Path:
    """An unused hidden name beside ``target``, within the file name limit."""
    return target.with_name(f".{_short(target.name)}.{secrets.token_hex(4)}.{tag}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Staging:
    """The outputs of one run, staged beside their targets and renamed into place together.

    ``write`` stages bytes; ``folder`` gives a scratch folder beside an output, for a
    file or package made by another library, which ``add`` then stages. ``commit``
    renames every staged file into place: each file it replaces is kept aside until all
    are in place, so a failure (or a signal) on the way puts the previous files back.
    ``close`` removes whatever was not committed.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[Path, Path, Path]] = []
        self._temporary: list[Path] = []

    def folder(self, output: Path) -> Path:
        """A new hidden folder beside ``output``'s target, removed by ``close``."""
        target = _real(output)
        try:
            folder = tempfile.mkdtemp(prefix=f".{_short(target.name)}.", dir=target.parent)
        except OSError as err:
            raise BadInputError(f"cannot write {str(output)!r}: {err.strerror}") from None
        self._temporary.append(Path(folder))
        return Path(folder)

    def add(self, staged: Path, output: Path) -> None:
        """Rename ``staged`` (beside ``output``'s target) to ``output`` at ``commit``."""
        self._entries.append((staged, _real(output), output))

    def write(self, data: bytes, output: Path) -> dict[str, object]:
        """Stage ``data`` for ``output``; its path, size and digest, for the report."""
        target = _real(output)
        mode = _mode_for(target)
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{_short(target.name)}.", suffix=".tmp", dir=target.parent
            )
        except OSError as err:
            raise BadInputError(f"cannot write {str(output)!r}: {err.strerror}") from None
        self._temporary.append(Path(tmp))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
        except OSError as err:
            raise BadInputError(f"cannot write {str(output)!r}: {err.strerror}") from None
        self.add(Path(tmp), output)
        return {"path": str(output), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def commit(self) -> None:
        """Rename every staged file into place, or (on any failure or signal) none."""
        interrupts.check()
        placed: list[tuple[Path, Path, Path | None]] = []
        output = None
        with interrupts.deferred():
            try:
                for staged, target, output in self._entries:  # noqa: B007 (named in the error)
                    backup = self._set_aside(target)
                    placed.append((staged, target, backup))
                    os.replace(staged, target)
                    if interrupts.pending() is not None:
                        break
            except BaseException as err:
                self._put_back(placed)
                if isinstance(err, OSError):
                    raise BadInputError(f"cannot write {str(output)!r}: {err.strerror}") from None
                raise
            if interrupts.pending() is not None:
                self._put_back(placed)
            else:
                for _, _, backup in placed:
                    if backup is not None:
                        _remove(backup)
                self._entries.clear()
        interrupts.check()

    @staticmethod
    def _set_aside(target: Path) -> Path | None:
        """Keep the file ``target`` names under a hidden name (None if there is none)."""
        if not os.path.lexists(target):
            return None
        backup = _aside(target, "old")
        if not target.is_dir():
            try:
                os.link(target, backup)
                return backup
            except OSError:
                pass
        os.rename(target, backup)
        return backup

    @staticmethod
    def _put_back(placed: list[tuple[Path, Path, Path | None]]) -> None:
        """Undo ``commit``: each target as it was before, newest first."""
        for staged, target, backup in reversed(placed):
            if os.path.lexists(target) and not os.path.lexists(staged):
                os.rename(target, staged)
            if backup is None:
                continue
            if os.path.lexists(target) and os.path.samefile(backup, target):
                backup.unlink()  # a hard link to the file still in place (rename is a no-op)
            else:
                os.replace(backup, target)

    def close(self) -> None:
        """Remove every temporary file and folder that is still there."""
        for path in self._temporary:
            _remove(path)
        for staged, _, _ in self._entries:
            _remove(staged)
        self._temporary.clear()
        self._entries.clear()


_ACTIVE: contextvars.ContextVar[Staging | None] = contextvars.ContextVar("staging", default=None)


@contextmanager
def staging() -> Iterator[Staging]:
    """Stage every file written inside the block; commit them together if it ends well.

    ``write_atomic``, ``write_text``, ``write_onnx``, ``scratch`` and ``publish`` join
    the innermost ``staging`` block; outside one, each commits its own files at once.
    """
    current = Staging()
    token = _ACTIVE.set(current)
    try:
        yield current
        current.commit()
    finally:
        _ACTIVE.reset(token)
        current.close()


@contextmanager
def _joined() -> Iterator[Staging]:
    """The active ``staging``, or one of its own for the block."""
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    with staging() as own:
        yield own


def write_atomic(data: bytes, path: Path) -> dict[str, object]:
    """Write atomically: a temporary file beside the target, renamed at the commit."""
    with _joined() as stage:
        return stage.write(data, path)


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
    data_name = f"{path.name}.data"
    mode = _mode_for(_real(path))
    with _joined() as stage:
        folder = stage.folder(path)
        staged = folder / path.name
        try:
            onnx.save_model(
                model,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            for name in (data_name, path.name):
                os.chmod(folder / name, mode)
        except OSError as err:
            raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
        stage.add(folder / data_name, _real(path).parent / data_name)
        stage.add(staged, path)
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
        size = staged.stat().st_size + (folder / data_name).stat().st_size
    return {"path": str(path), "bytes": size, "sha256": digest, "external_data": data_name}


@contextmanager
def scratch(output: Path) -> Iterator[Path]:
    """A hidden folder beside ``output`` for files made by other libraries.

    It belongs to the active ``staging`` (or to one of its own for the block), which
    renames what ``publish`` staged from it and removes it in every case.
    """
    with _joined() as stage:
        yield stage.folder(output)


def publish(staged: Path, output: Path) -> None:
    """Stage a checked file or package (in a ``scratch`` folder) with normal permissions."""
    active = _ACTIVE.get()
    if active is None:
        raise RuntimeError("publish needs a staging block (files.scratch or files.staging)")
    file_mode = _new_file_mode()
    if staged.is_dir():
        os.chmod(staged, file_mode | ((file_mode & 0o444) >> 2))
        for item in staged.rglob("*"):
            mode = file_mode | ((file_mode & 0o444) >> 2) if item.is_dir() else file_mode
            os.chmod(item, mode)
    else:
        os.chmod(staged, _mode_for(_real(output)))
    active.add(staged, output)


LOW_SPACE = 64 * 2**20
"""Free bytes under which a failed write is put down to a full disk."""


def space_note(folder: Path) -> str:
    """`` (no space left on DEVICE...)`` when ``folder``'s file system is (nearly) full."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    if free >= LOW_SPACE:
        return ""
    return f" ({os.strerror(errno.ENOSPC).lower()} in {str(folder)!r}: {free} bytes free)"


@contextmanager
def private_tempdir() -> Iterator[Path]:
    """A folder of this run inside TMPDIR for every library's temporary files.

    ``tempfile`` and the ``TMPDIR`` variable point to it for the block; it is removed
    however the block ends, with whatever a library left there (coremltools leaves a
    half-written package when TMPDIR is full). Variables a library set to a path in it
    (torch's inductor cache) are restored too.
    """
    base = tempfile.gettempdir()
    try:
        folder = tempfile.mkdtemp(prefix="ca-export-")
    except OSError as err:
        raise BadInputError(
            f"cannot create a temporary folder in {base!r}: {err.strerror} "
            "(set TMPDIR to a folder with room)"
        ) from None
    saved_env = dict(os.environ)
    saved_dir = tempfile.tempdir
    tempfile.tempdir = folder
    os.environ["TMPDIR"] = folder
    try:
        yield Path(folder)
    finally:
        tempfile.tempdir = saved_dir
        for key, value in list(os.environ.items()):
            if folder in value:
                if key in saved_env:
                    os.environ[key] = saved_env[key]
                else:
                    del os.environ[key]
        shutil.rmtree(folder, ignore_errors=True)
