"""The trained sample ``digits_ca``: its committed weights, shipped data and training script."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from ca_export.inputs import load_inputs
from sample_models import build
from sample_models.digits import (
    CALIBRATION_DIR,
    EVAL_DIR,
    HELD_OUT_TOP1,
    INPUT_SHAPE,
    digit_images,
    held_out,
    normalise,
)
from sample_models.train_digits import held_out_accuracy, train


@functools.cache
def _shipped_set() -> tuple[np.ndarray, np.ndarray]:
    """The shipped evaluation set as the tool reads it: inputs [N, 3, 32, 32], labels [N]."""
    files = sorted(EVAL_DIR.glob("*/*.png"))
    inputs = np.concatenate([x for _, x in load_inputs(files, INPUT_SHAPE)])
    return inputs, np.array([int(f.parent.name) for f in files])


def test_shipped_set_is_the_held_out_digits() -> None:
    """The PNG files, read as any image input, are the held-out digits as trained on."""
    inputs, labels = _shipped_set()
    images, all_labels = digit_images()
    mask = held_out(len(images))
    assert sorted(labels.tolist()) == sorted(all_labels[mask].tolist())
    assert len(list(CALIBRATION_DIR.glob("*.png"))) == 32
    expected = normalise(images[mask][np.argsort(all_labels[mask], kind="stable")]).numpy()
    np.testing.assert_allclose(inputs, expected, atol=1e-5)


def test_committed_weights_reach_the_recorded_accuracy() -> None:
    inputs, labels = _shipped_set()
    with torch.no_grad():
        logits = build("digits_ca")(torch.from_numpy(inputs)).numpy()
    assert float((logits.argmax(1) == labels).mean()) == pytest.approx(HELD_OUT_TOP1)


@pytest.mark.slow
def test_training_reproduces_the_committed_weights() -> None:
    """The script trains the committed weights again (one thread, seeded), bit for bit, so
    their accuracy is the recorded one."""
    model = train()
    committed = build("digits_ca").state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, committed[key]), key
    assert held_out_accuracy(model) == pytest.approx(HELD_OUT_TOP1)
    assert HELD_OUT_TOP1 > 0.95
