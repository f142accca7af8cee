"""The accuracy gate (``verify.accuracy``): the labelled set, top-k, the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ca_export.errors import BadInputError
from ca_export.report import Verdict
from ca_export.report.figures import AccuracyFigures
from ca_export.verify.accuracy import (
    EvalSet,
    accuracy_check,
    classifier_output,
    measure,
    read_eval_set,
    top_k,
)

SHAPE = (1, 3, 4, 4)


def _write_set(root: Path) -> Path:
    """Two classes: ``a`` with one array of 3 rows, ``b`` with one C,H,W array."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    np.save(root / "a" / "rows.npy", np.full((3, 3, 4, 4), 1.0, np.float32))
    np.save(root / "b" / "one.npy", np.full((3, 4, 4), -1.0, np.float32))
    (root / "b" / "notes.txt").write_text("ignored")
    return root


def test_read_eval_set_labels_each_row_by_its_folder(tmp_path: Path) -> None:
    eval_set = read_eval_set(_write_set(tmp_path / "set"), SHAPE)
    assert eval_set.classes == ("a", "b")
    assert eval_set.labels == (0, 0, 0, 1)
    assert eval_set.samples[0][0] == "a/rows.npy[0]"
    assert all(x.shape == SHAPE for _, x in eval_set.samples)
    assert [len(eval_set.picks(2)), len(eval_set.picks(9))] == [2, 4]


@pytest.mark.parametrize(
    ("layout", "message"),
    [("missing", "is not a folder"), ("flat", "no class folders"), ("empty", "holds no")],
)
def test_read_eval_set_refuses_a_bad_folder(tmp_path: Path, layout: str, message: str) -> None:
    folder = tmp_path / "set"
    if layout != "missing":
        folder.mkdir()
    if layout == "flat":
        np.save(folder / "x.npy", np.zeros(SHAPE[1:], np.float32))
    if layout == "empty":
        (folder / "a").mkdir()
    with pytest.raises(BadInputError, match=message):
        read_eval_set(folder, SHAPE)


def test_read_eval_set_refuses_another_shape(tmp_path: Path) -> None:
    folder = _write_set(tmp_path / "set")
    with pytest.raises(BadInputError, match="expected N,3,8,8"):
        read_eval_set(folder, (1, 3, 8, 8))


def test_top_k() -> None:
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]])
    labels = np.array([1, 2])
    assert top_k(scores, labels, 1) == 0.5
    assert top_k(scores, labels, 2) == 1.0


def _set(labels: list[int]) -> EvalSet:
    samples = tuple((f"s{i}", np.full((1, 3), float(i), np.float32)) for i in range(len(labels)))
    return EvalSet(Path("set"), ("a", "b", "c"), samples, tuple(labels))


def _scores(flip: set[int]) -> object:
    """A runner scoring each sample i for class i % 3, or for the next class where i in flip."""

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = np.zeros((len(x), 3), np.float32)
        for row, i in enumerate(x[:, 0].astype(int)):
            out[row, (i + (i in flip)) % 3] = 1.0
        return [out]

    return run


def test_measure_and_check_pass_and_fail_on_the_drop() -> None:
    """10 samples: the reference right on all, the artifact wrong on one: a 10-point drop."""
    eval_set = _set([i % 3 for i in range(10)])
    kept = measure(_scores(set()), _scores(set()), eval_set, ["logits"], 1.0)
    dropped = measure(_scores(set()), _scores({4}), eval_set, ["logits"], 1.0)
    allowed = measure(_scores(set()), _scores({4}), eval_set, ["logits"], 10.0)
    assert kept is not None and dropped is not None and allowed is not None
    assert (kept.reference_top1, kept.top1, kept.drop) == (1.0, 1.0, 0.0)
    assert dropped.top1 == pytest.approx(0.9) and dropped.drop == pytest.approx(10.0)
    passed = accuracy_check(kept, eval_set, "PyTorch fp32", "x")
    failed = accuracy_check(dropped, eval_set, "PyTorch fp32", "x")
    assert passed is not None and passed.verdict is Verdict.PASSED
    assert failed is not None and failed.verdict is Verdict.FAILED
    assert isinstance(failed.figures, AccuracyFigures)
    assert failed.figures.failures == ("top-1 drop 10.00 points > 1",)
    check = accuracy_check(allowed, eval_set, "PyTorch fp32", "x")
    assert check is not None and check.verdict is Verdict.PASSED


def test_no_accuracy_without_class_scores() -> None:
    """A dense output (a map) is no classifier: no figure, no check."""
    assert classifier_output([np.zeros((1, 3, 4, 4), np.float32)], 1, 3) is None
    assert classifier_output([np.zeros((1, 2), np.float32)], 1, 3) is None
    assert classifier_output([np.zeros((1, 3), np.int64), np.zeros((1, 5))], 1, 3) == 1

    def dense(x: np.ndarray) -> list[np.ndarray]:
        return [np.zeros((len(x), 3, 2, 2), np.float32)]

    assert measure(dense, dense, _set([0, 1]), ["map"], 1.0) is None
    assert accuracy_check(None, _set([0]), "PyTorch fp32", "x") is None
