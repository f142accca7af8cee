"""Which sizes ``verify`` refuses for an ncnn model: a ``--fixed-size`` one off its size,
a size-safe one off its recorded H, W multiples; none for a plain size-safe one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ca_export.verify.artifacts import NcnnArtifact


def artifact(**recorded: Any) -> NcnnArtifact:
    """An artifact with what its metadata recorded (the runner is never called here)."""
    return NcnnArtifact(Path("m.ncnn.param"), None, ["output"], **recorded)  # type: ignore[arg-type]


def test_size_safe_at_multiples_refuses_other_sizes() -> None:
    model = artifact(multiple=(16, 16))
    assert model.invalid_at((2, 3, 64, 96)) is None
    why = model.invalid_at((1, 3, 72, 64))
    assert why is not None and "multiple of 16" in why and "72x64" in why


def test_plain_size_safe_takes_every_size() -> None:
    assert artifact().invalid_at((1, 3, 73, 61)) is None


def test_fixed_size_refuses_other_sizes() -> None:
    model = artifact(fixed=[1, 3, 32, 32])
    assert model.invalid_at((1, 3, 32, 32)) is None
    assert model.invalid_at((1, 3, 48, 48)) is not None
