"""Options shared by several commands, each defined once."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ca_export.errors import BadInputError
from ca_export.loading import parse_input_shape

F = TypeVar("F", bound=Callable[..., Any])


class InputShape(click.ParamType):
    """``N,C,H,W`` as a tuple of four positive ints."""

    name = "N,C,H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int, int, int]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        try:
            return parse_input_shape(str(value))
        except BadInputError as err:
            self.fail(str(err), param, ctx)


model_argument = click.argument("model", metavar="MODEL")
weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="State dict to load (plain, or under 'state_dict'/'model'; 'module.' is stripped).",
)
input_shape_option = click.option(
    "--input-shape",
    type=InputShape(),
    default="1,3,224,224",
    show_default=True,
    help="Example input shape N,C,H,W used for tracing and the gate.",
)
report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a JSON report here.",
)


def model_options(func: F) -> F:
    """MODEL, --weights and --input-shape, stacked."""
    for option in reversed((model_argument, weights_option, input_shape_option)):
        func = option(func)
    return func


class PositiveFloat(click.ParamType):
    """A finite float greater than zero."""

    name = "FLOAT>0"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a finite number greater than 0", param, ctx)
        return number
