"""Options shared by several commands, each defined once."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ca_export.errors import BadInputError
from ca_export.inputs import parse_shapes
from ca_export.loading import parse_input_shape
from ca_export.pipeline.common import GateOptions
from ca_export.rewrites import DEFAULT_TARGET, PASSES, TARGETS
from ca_export.verify.accuracy import DEFAULT_MAX_DROP
from cli.common import handle_errors

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
trust_pickle_option = click.option(
    "--trust-pickle",
    is_flag=True,
    help="Let MODEL be a checkpoint holding a pickled nn.Module (unpickling runs its code).",
)
memory_check_option = click.option(
    "--memory-check/--no-memory-check",
    default=True,
    show_default=True,
    help="Refuse an input shape that needs more memory than is available.",
)
dynamic_option = click.option(
    "--dynamic",
    is_flag=True,
    help="Make H and W dynamic (and the batch, where the format allows); the gate also runs "
    "at other sizes.",
)
rewrite_option = click.option(
    "--rewrite/--no-rewrite", default=True, show_default=True, help="Rewrite CA blocks."
)
skip_pass_option = click.option(
    "--skip-pass",
    "skip_passes",
    multiple=True,
    type=click.Choice(list(PASSES)),
    help="Leave this rewrite pass out (repeatable; for ablations).",
)
target_option = click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    default=DEFAULT_TARGET,
    show_default=True,
    help="Runtime to rewrite CA blocks for: ort-x86 (ONNX Runtime's blocked NCHWc layout on "
    "x86), ort-plain (plain NCHW runtimes, e.g. ONNX Runtime on ARM).",
)
report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a JSON report here.",
)
html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the report as one self-contained HTML page with plots here.",
)


def model_options(func: F) -> F:
    """MODEL, --weights, --input-shape, --trust-pickle and --memory-check, stacked."""
    options = (
        model_argument,
        weights_option,
        input_shape_option,
        trust_pickle_option,
        memory_check_option,
    )
    for option in reversed(options):
        func = option(func)
    return func


JOB_FIELDS = {
    "model": "model",
    "output": "output",
    "weights": "weights",
    "input_shape": "input_shape",
    "trust_pickle": "trust_pickle",
    "memory_check": "check_memory",
    "dynamic": "dynamic",
    "rewrite": "rewrite",
    "skip_passes": "skip_passes",
}
GATE_FIELDS = ("rtol", "atol", "allow_unverified", "eval_data", "max_accuracy_drop")
"""Command parameters that are ``GateOptions`` fields."""
"""Command parameters that are ``ModelJob`` fields, and the field each one sets."""


def bound_options(func: F) -> F:
    """--rtol and --atol, stacked."""
    rtol = click.option(
        "--rtol",
        type=PositiveFloat(),
        help="Max abs error over the RMS of each output slice (replaces the table's bound "
        "and its widening by the model's own noise).",
    )
    atol = click.option("--atol", type=PositiveFloat(), help="Max abs error, on top of the bound.")
    return rtol(atol(func))


allow_unverified_option = click.option(
    "--allow-unverified",
    is_flag=True,
    help="Accept an artifact whose parity cannot be judged here (exit 0, not 1).",
)


eval_data_option = click.option(
    "--eval-data",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Labelled set, one sub-folder per class (images or .npy/.npz): gate the artifact's "
    "top-1 accuracy against the fp32 model's; its samples are also real gate inputs.",
)
max_accuracy_drop_option = click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0),
    default=None,
    metavar="POINTS",
    help=f"With --eval-data: top-1 points the artifact may lose [default: {DEFAULT_MAX_DROP:g}].",
)


def gate_options(func: F) -> F:
    """--rtol, --atol, --allow-unverified, --eval-data and --max-accuracy-drop, stacked."""
    func = eval_data_option(max_accuracy_drop_option(func))
    return bound_options(allow_unverified_option(func))


def gate_fields(kwargs: dict[str, Any]) -> GateOptions:
    """The ``GateOptions`` of a command's parameters, taken out of ``kwargs``."""
    return GateOptions(**{name: kwargs.pop(name) for name in GATE_FIELDS if name in kwargs})


def model_job(func: F) -> F:
    """Hand a command the ``ModelJob`` fields of its shared options as one ``fields`` dict
    (MODEL, -o, --weights, --input-shape, --trust-pickle, --memory-check, --dynamic,
    --rewrite/--no-rewrite, --skip-pass, and --rtol/--atol/--allow-unverified as ``gates``),
    so that it builds its job as ``Job(**fields, ...)``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fields = {field: kwargs.pop(param) for param, field in JOB_FIELDS.items()}
        fields["gates"] = gate_fields(kwargs)
        return func(*args, fields=fields, **kwargs)

    return wrapper  # type: ignore[return-value]


def output_option(help: str) -> Callable[[F], F]:
    """``-o/--output``, required, with the command's own ``help``."""
    return click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help=help)


def export_options(func: F) -> F:
    """The tail of every export command, after its own options: --rewrite/--no-rewrite,
    --skip-pass, --report, --html and the gate options, stacked, then the error boundary
    (``handle_errors``) and the job's fields as one ``fields`` dict (``model_job``)."""
    tail = (
        rewrite_option,
        skip_pass_option,
        report_option,
        html_option,
        gate_options,
        handle_errors,
        model_job,
    )
    for decorator in reversed(tail):
        func = decorator(func)
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


class ThreadList(click.ParamType):
    """``1,2,4`` as a tuple of positive ints."""

    name = "N[,N...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            threads = tuple(int(p) for p in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not threads or any(t < 1 for t in threads):
            self.fail(f"{value!r}: thread counts must be positive", param, ctx)
        return threads


class NameList(click.ParamType):
    """``a,b`` as a tuple of names, each one of ``choices``."""

    name = "NAME[,NAME...]"

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(n.strip() for n in str(value).split(",") if n.strip())
        wrong = [n for n in names if n not in self.choices]
        if wrong or not names:
            self.fail(f"{value!r}: expected names among {', '.join(self.choices)}", param, ctx)
        return names


class FloatList(click.ParamType):
    """Comma-separated floats."""

    name = "FLOAT[,FLOAT...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


class SizeRange(click.ParamType):
    """``LOW:HIGH`` bounds for H and W."""

    name = "LOW:HIGH"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        try:
            low, high = (int(v) for v in str(value).split(":"))
        except ValueError:
            self.fail(f"{value!r} is not LOW:HIGH", param, ctx)
        if not 0 < low <= high:
            self.fail(f"{value!r} needs 0 < LOW <= HIGH", param, ctx)
        return low, high


class SizeList(click.ParamType):
    """``HxW,HxW,...`` sizes."""

    name = "HxW[,HxW...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[tuple[int, int], ...]:
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(tuple(int(v) for v in s.split("x")) for s in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of HxW sizes", param, ctx)
        if any(len(s) != 2 or min(s) <= 0 for s in sizes):
            self.fail(f"{value!r} is not a list of positive HxW sizes", param, ctx)
        return sizes  # type: ignore[return-value]


class Shapes(click.ParamType):
    """``NxCxHxW[,NxCxHxW...]``."""

    name = "SHAPES"

    def convert(self, value: object, param: object, ctx: object) -> list[tuple[int, ...]]:
        if isinstance(value, list):
            return value
        try:
            return parse_shapes(str(value))
        except Exception as err:
            self.fail(str(err), param, ctx)  # type: ignore[arg-type]


precision_option = click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp32",
    show_default=True,
    help="Lower the gated fp32 model to fp16 or int8, behind the lossy-format gate.",
)
calibration_option = click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of images or .npy/.npz arrays to calibrate int8 on (also gate inputs).",
)
keep_fp32_option = click.option(
    "--keep-fp32",
    multiple=True,
    metavar="MODULE|auto",
    help="With int8: keep the nodes of this module (e.g. features.0) in fp32; repeatable. "
    "'auto': keep the fewest modules, most sensitive first, that bring int8 within the "
    "gate's bounds (and --max-accuracy-drop on --eval-data).",
)


def precision_options(func: F) -> F:
    """``--precision``, ``--calibration`` and ``--keep-fp32``, stacked."""
    for option in reversed((precision_option, calibration_option, keep_fp32_option)):
        func = option(func)
    return func
