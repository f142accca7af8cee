"""The ``ca-export`` group; each command lives in its own module."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ca_export import __version__
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ca-export")
def cli() -> None:
    """Find Coordinate Attention blocks, rewrite them exactly, export and verify.

    MODEL is a sample model name (seed_ca, mobilenetv2_ca, mobilenext_ca, ca_segnet),
    path/to/file.py:factory, or package.module:factory.
    """
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


def main() -> None:
    """Entry point of the ``ca-export`` script."""
    from cli.inspect_cmd import inspect
    from cli.onnx_cmd import onnx

    cli.add_command(inspect)
    cli.add_command(onnx)
    cli()
