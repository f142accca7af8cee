"""The ``ca-export`` group; each command lives in its own module."""

from __future__ import annotations

import logging
import warnings

import click

from ca_export import __version__
from cli.bench_cmd import bench_cmd
from cli.coreml_cmd import coreml
from cli.executorch_cmd import executorch
from cli.inspect_cmd import inspect
from cli.litert_cmd import litert
from cli.ncnn_cmd import ncnn
from cli.onnx_cmd import onnx
from cli.optimize_cmd import optimize
from cli.report_cmd import report
from cli.verify_cmd import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ca-export")
def cli() -> None:
    """Find Coordinate Attention blocks, rewrite them exactly, export and verify.

    MODEL is a sample model name (seed_ca, mobilenetv2_ca, mobilenext_ca, ca_segnet, mobilenetv2),
    path/to/file.py:factory, or package.module:factory.
    """
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


cli.add_command(inspect)
cli.add_command(onnx)
cli.add_command(optimize)
cli.add_command(verify)
cli.add_command(bench_cmd)
cli.add_command(coreml)
cli.add_command(executorch)
cli.add_command(litert)
cli.add_command(ncnn)
cli.add_command(report)


def main() -> None:
    """Entry point of the ``ca-export`` script."""
    cli()


if __name__ == "__main__":
    main()
