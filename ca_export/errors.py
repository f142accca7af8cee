"""Errors the pipeline raises; the CLI maps each class to one exit code."""

from __future__ import annotations


class CAExportError(Exception):
    """Base class of every error the library raises on purpose."""


class BadInputError(CAExportError):
    """The user's input cannot be used (exit code 2)."""


class CheckFailedError(CAExportError):
    """A gate or structural check failed (exit code 1)."""


class StageError(CAExportError):
    """An exception the library did not expect, with the stage it came from (exit code 3).

    The original exception is kept as ``__cause__`` for ``--debug``.
    """

    def __init__(self, stage: str, error: BaseException) -> None:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        first = lines[0] if lines else ""
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {first}")
        self.stage = stage
