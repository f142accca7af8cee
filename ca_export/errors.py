"""Errors the pipeline raises; the CLI maps each class to one exit code."""


class CAExportError(Exception):
    """Base class of every error the library raises on purpose."""


class BadInputError(CAExportError):
    """The user's input cannot be used (exit code 2)."""


class CheckFailedError(CAExportError):
    """A gate or structural check failed (exit code 1)."""
