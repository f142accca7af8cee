"""The accuracy gate: top-1 and top-5 of the fp32 model and of the artifact on a labelled set.

A lossy artifact (fp16, int8, compressed weights) is judged as its users judge it: by
accuracy on their own validation data. ``--eval-data DIR`` names a folder in the
ImageFolder layout (one sub-folder per class, sorted by name: the class index is the
position, as ``torchvision.datasets.ImageFolder`` numbers them), holding images or
``.npy``/``.npz`` arrays (C,H,W or N,C,H,W, every row labelled by its folder). Images are
read as ``--calibration`` reads them (``inputs.load_inputs``: RGB, /255, ImageNet mean and
std); arrays are taken as the model's input.

The gate runs the PyTorch model and the artifact on every sample, one at a time, and
takes the classifier output: the first output that is 2-D ``[1, K]`` with ``K`` at least
the number of classes. It fails when the artifact's top-1 accuracy is more than
``max_drop`` points below the model's (``--max-accuracy-drop``, default
``DEFAULT_MAX_DROP``). A model without such an output gets no accuracy figure; the folder's
samples still serve as real inputs of the lossy agreement gates (``EvalSet.picks``).

torchvision's ``ImageFolder`` is not used: torchvision is not a dependency, and the
samples must go through the same reader as every other input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ca_export.errors import BadInputError
from ca_export.inputs import IMAGE_SUFFIXES, load_inputs
from ca_export.report import Check
from ca_export.report.figures import AccuracyFigures
from ca_export.verify.runtime import Runner

DEFAULT_MAX_DROP = 1.0
"""Top-1 points an artifact may lose against the fp32 model by default."""
SUFFIXES = IMAGE_SUFFIXES | {".npy", ".npz"}
GATE_PICKS = 8
"""How many samples of the set join a lossy agreement gate's inputs."""

BATCH = 64
"""Samples per run of the reference."""


@dataclass(frozen=True)
class EvalSet:
    """A labelled set: each sample a ``1,C,H,W`` float32 input, its label a class index."""

    folder: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, np.ndarray], ...]
    labels: tuple[int, ...]

    def picks(self, count: int = GATE_PICKS) -> list[tuple[str, np.ndarray]]:
        """``count`` samples spread evenly over the set (so over its classes), as named
        inputs for an agreement gate."""
        if len(self.samples) <= count:
            return list(self.samples)
        index = np.linspace(0, len(self.samples) - 1, count).round().astype(int)
        return [self.samples[i] for i in index]


def read_eval_set(folder: Path, input_shape: tuple[int, int, int, int]) -> EvalSet:
    """The labelled set in ``folder`` (ImageFolder layout); bad input names what is wrong."""
    if not folder.is_dir():
        raise BadInputError(f"--eval-data {str(folder)!r} is not a folder")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise BadInputError(
            f"--eval-data {str(folder)!r} has no class folders; expected one sub-folder "
            "per class (ImageFolder layout)"
        )
    samples: list[tuple[str, np.ndarray]] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file, array in load_inputs(_files(folder / name), input_shape):
            if array.shape[1:] != tuple(input_shape[1:]):
                expected = ",".join(map(str, input_shape[1:]))
                raise BadInputError(
                    f"--eval-data {name}/{file}: shape {array.shape}, expected N,{expected}"
                )
            for i in range(len(array)):
                row = f"[{i}]" if len(array) > 1 else ""
                samples.append((f"{name}/{file}{row}", array[i : i + 1]))
                labels.append(label)
    if not samples:
        raise BadInputError(f"--eval-data {str(folder)!r} holds no images or .npy/.npz arrays")
    return EvalSet(folder, tuple(classes), tuple(samples), tuple(labels))


def _files(folder: Path) -> list[Path]:
    """The image and array files of one class folder, by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 accuracy (shares) of the reference and of the artifact on one set.

    ``drop`` is the reference's top-1 minus the artifact's, in points (percent).
    """

    output: str
    samples: int
    classes: int
    reference_top1: float
    reference_top5: float
    top1: float
    top5: float
    max_drop: float

    @property
    def drop(self) -> float:
        """Top-1 points lost against the reference."""
        return 100.0 * (self.reference_top1 - self.top1)

    @property
    def passed(self) -> bool:
        """Whether the drop is within ``max_drop`` (a gain always passes)."""
        return self.drop <= self.max_drop + 1e-9


def classifier_output(outputs: Sequence[np.ndarray], rows: int, classes: int) -> int | None:
    """The index of the first output that is class scores ``[rows, K]``, K >= ``classes``."""
    for i, out in enumerate(outputs):
        scores = out.ndim == 2 and np.issubdtype(out.dtype, np.floating)
        if scores and out.shape[0] == rows and out.shape[1] >= max(classes, 2):
            return i
    return None


def top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share of rows whose label is among their ``k`` highest scores."""
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean((best == labels[:, None]).any(axis=1)))


def measure(
    reference: Runner,
    artifact: Runner,
    eval_set: EvalSet,
    output_names: Sequence[str],
    max_drop: float,
) -> Accuracy | None:
    """The reference on the set in batches of ``BATCH`` (a PyTorch model runs one sample in
    about the time of a batch), the artifact on each sample (its batch may be fixed);
    None where the model has no classifier output."""
    inputs = [x for _, x in eval_set.samples]
    first = reference(np.concatenate(inputs[:BATCH]))
    index = classifier_output(first, len(inputs[:BATCH]), len(eval_set.classes))
    if index is None:
        return None
    refs = [first[index]]
    refs += [reference(np.concatenate(inputs[i : i + BATCH]))[index] for i in _starts(inputs)]
    gots = [np.asarray(artifact(x)[index]) for x in inputs]
    ref = np.concatenate(refs).astype(np.float64)
    got = np.concatenate(gots).astype(np.float64)
    labels = np.asarray(eval_set.labels)
    return Accuracy(
        output_names[index],
        len(labels),
        len(eval_set.classes),
        top_k(ref, labels, 1),
        top_k(ref, labels, 5),
        top_k(got, labels, 1),
        top_k(got, labels, 5),
        max_drop,
    )


def _starts(inputs: Sequence[np.ndarray]) -> range:
    """The starts of the reference's batches after the first."""
    return range(BATCH, len(inputs), BATCH)


def accuracy_check(
    accuracy: Accuracy | None, eval_set: EvalSet, reference: str, artifact: str
) -> Check | None:
    """The ``accuracy`` check of a measurement (None without a classifier output)."""
    if accuracy is None:
        return None
    failures = (
        ()
        if accuracy.passed
        else (f"top-1 drop {accuracy.drop:.2f} points > {accuracy.max_drop:g}",)
    )
    figures = AccuracyFigures(
        data=str(eval_set.folder),
        output=accuracy.output,
        samples=accuracy.samples,
        classes=accuracy.classes,
        reference=reference,
        artifact=artifact,
        reference_top1=accuracy.reference_top1,
        reference_top5=accuracy.reference_top5,
        top1=accuracy.top1,
        top5=accuracy.top5,
        drop=round(accuracy.drop, 4),
        max_drop=accuracy.max_drop,
        failures=failures,
    )
    return Check.judged("accuracy", accuracy.passed, figures)
