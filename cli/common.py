"""What every command shares: exit codes, error handling, progress lines."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ca_export.errors import BadInputError, CheckFailedError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def progress(stage: str) -> None:
    """One progress line per stage, on stderr."""
    click.echo(f"[{stage}]", err=True)


def handle_errors(func: F) -> F:
    """Turn the library's errors into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BadInputError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except CheckFailedError as err:
            click.echo(f"check failed: {err}", err=True)
            sys.exit(EXIT_CHECK_FAILED)

    return wrapper  # type: ignore[return-value]
