"""``ca-export report``: one HTML page with plots from the JSON reports of earlier runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ca_export.errors import BadInputError
from ca_export.files import Output, guard, staging, write_text
from ca_export.report import load
from ca_export.report.html import Run, render_html
from cli.common import handle_errors

EPILOG = """\b
Examples:
  ca-export onnx mobilenetv2_ca -o mnv2.onnx --report onnx.json
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --json > bench.json
  ca-export report onnx.json bench.json -o report.html
"""


@click.command("report", epilog=EPILOG)
@click.argument(
    "runs", metavar="RUN.json...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="HTML file to write.",
)
@handle_errors
def report(runs: tuple[Path, ...], output: Path) -> None:
    """Turn the JSON reports of onnx, coreml, executorch, optimize, verify and bench runs into
    one self-contained HTML page (no network; plots inline), the runs side by side."""
    guard(runs, [Output(output, "html")])
    pages = [Run(path.stem, _read(path)) for path in runs]
    with staging():
        write_text(render_html(pages), output)
    click.echo(f"wrote {output} ({len(pages)} run(s))")


def _read(path: Path) -> object:
    """The typed report in ``path``; one line and exit 2 for anything else."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"report {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInputError(f"cannot read report {str(path)!r}: {err}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{str(path)!r} is not a ca-export report")
    try:
        return load(data)
    except (ValueError, TypeError, KeyError) as err:
        raise BadInputError(f"{str(path)!r}: {str(err).splitlines()[0]}") from None
