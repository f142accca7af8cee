"""``ca-export inspect``: list the CA blocks of a model."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from ca_export.pipeline import inspect_model
from ca_export.report import render_inspect
from cli.common import handle_errors, progress
from cli.options import model_options, target_option

EPILOG = """\b
Examples:
  ca-export inspect mobilenetv2_ca
  ca-export inspect my_net.py:build --input-shape 1,3,256,256 --json
"""


@click.command(epilog=EPILOG)
@model_options
@target_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def inspect(
    model: str,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    trust_pickle: bool,
    memory_check: bool,
    target: str,
    as_json: bool,
) -> None:
    """Find the CA blocks of MODEL by graph structure and lint them; say what each rewrite
    pass of the target's form would do to each block."""
    # The user's factory and forward may print: keep that off stdout, which holds the report
    # (JSON that must parse).
    with contextlib.redirect_stdout(sys.stderr):
        report = inspect_model(
            model, weights, input_shape, progress, trust_pickle, memory_check, target
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_inspect(report))
