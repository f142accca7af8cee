"""Inputs for verification: seeded tensors, ``--shapes`` lists, and user files."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ca_export.errors import BadInputError
from ca_export.loading import parse_input_shape

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """``"1x3x224x224,2x3x256x320"`` as a list of N,C,H,W tuples."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise BadInputError("--shapes needs at least one NxCxHxW shape")
    return [parse_input_shape(item.replace("x", ",")) for item in items]


def load_inputs(
    paths: list[Path],
    input_shape: tuple[int, int, int, int],
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    pixels: bool = False,
    notices: list[str] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Arrays from .npy/.npz files (N,C,H,W or C,H,W) and images, as float32 N,C,H,W.

    Images are normalised by ``mean`` and ``std``, or with ``pixels`` kept as RGB
    values 0..255 (for a model that takes images and normalises them itself).
    A 16-bit grey image is scaled to 0..255 in float; ``notices`` gets a line saying so.
    """
    loaded: list[tuple[str, np.ndarray]] = []
    for path in paths:
        if path.is_dir():
            raise BadInputError(f"input {str(path)!r} is a folder, not a file")
        if not path.is_file():
            raise BadInputError(f"input file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            loaded.append((path.name, _as_batch(_load_npy(path), path.name)))
        elif suffix == ".npz":
            loaded += [(name, _as_batch(array, name)) for name, array in _load_npz(path)]
        elif suffix in IMAGE_SUFFIXES:
            rgb = _load_image(path, input_shape, notices)
            loaded.append((path.name, rgb if pixels else _normalise(rgb, mean, std)))
        else:
            raise BadInputError(f"input {str(path)!r}: expected .npy, .npz or an image file")
    return loaded


def _load_npy(path: Path) -> np.ndarray:
    """An array from a .npy file; a file that is not one gives one clear error."""
    try:
        array: np.ndarray = np.load(path, allow_pickle=False)
        return array
    except (ValueError, OSError) as err:
        raise BadInputError(f"cannot read {str(path)!r}: {err}") from None


def _load_npz(path: Path) -> list[tuple[str, np.ndarray]]:
    """The named arrays of a .npz file; a file that is not one gives one clear error."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not a zip archive of arrays")
        with archive:
            return [(f"{path.name}:{key}", archive[key]) for key in archive.files]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInputError(f"cannot read {str(path)!r} as a .npz archive: {reason}") from None


def _as_batch(array: np.ndarray, name: str) -> np.ndarray:
    """A C,H,W or N,C,H,W numeric array as float32 N,C,H,W, every value finite.

    A NaN or Inf is refused, naming the file: it spreads through the first layer, so
    PyTorch and the artifact both answer NaN and nothing can be judged (``verify`` would
    blame the first module, calibration would take it as a range). Values beyond float32's
    range count as Inf (they become Inf when read as float32).
    """
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.number):
        raise BadInputError(f"input {name}: expected a numeric N,C,H,W array, got {array.shape}")
    with np.errstate(over="ignore"):
        batch = array.astype(np.float32)
    if not np.isfinite(batch).all():
        nan = int(np.count_nonzero(np.isnan(batch)))
        kind, count = ("NaN", nan) if nan else ("Inf", int(np.count_nonzero(np.isinf(batch))))
        raise BadInputError(
            f"input {name} holds {kind} at {count} of {batch.size} values; "
            "inputs and calibration samples must be finite"
        )
    return batch


def is_image(name: str) -> bool:
    """Whether an input's name (as ``load_inputs`` gives it) is an image file's."""
    return Path(name.split(":")[0]).suffix.lower() in IMAGE_SUFFIXES


def _load_image(
    path: Path, shape: tuple[int, int, int, int], notices: list[str] | None = None
) -> np.ndarray:
    """An RGB image resized to H,W: pixel values 0..255 as float32 1,3,H,W."""
    try:
        from PIL import Image
    except ImportError:
        raise BadInputError("image inputs need Pillow: pip install pillow") from None
    size = (shape[3], shape[2])
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16") or image.mode == "I":
                if notices is not None:
                    notices.append(
                        f"{path.name} is a 16-bit grey image: its values are scaled by "
                        "255/65535 (kept in float) and copied to R, G and B"
                    )
                return _wide_grey(image, size, path)
            rgb = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    except OSError as err:
        raise BadInputError(f"cannot read image {str(path)!r}: {err}") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None])


def _wide_grey(image: Any, size: tuple[int, int], path: Path) -> np.ndarray:
    """A 16-bit grey image as float RGB 0..255: each value times 255/65535, kept in float
    (Pillow's ``convert("RGB")`` clips it to 255 instead, whitening nearly every pixel).
    Values beyond 16 bits (a 32-bit integer image) are refused: their range is unknown."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if values.min() < 0 or values.max() > 65535:
        raise BadInputError(
            f"image {str(path)!r} holds {image.mode} values outside 0..65535; "
            "give it as 8- or 16-bit, or as a .npy array"
        )
    image_f = Image.fromarray((values * (255 / 65535)).astype(np.float32), mode="F")
    grey = np.asarray(image_f.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    return np.repeat(grey[None, None], 3, axis=1)


def _normalise(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Pixels scaled to [0, 1], then normalised per channel."""
    array = rgb / 255.0
    return (array - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[
        :, None, None
    ]
