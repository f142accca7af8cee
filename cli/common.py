"""What every command shares: exit codes, the error boundary, signals, progress lines.

Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 an unexpected error (a bug in
ca-export or something in the model it does not support), 130 interrupted (SIGINT),
143 terminated (SIGTERM). Every error is one line on stderr; ``--debug`` adds the
traceback and torch's own log lines.
"""

from __future__ import annotations

import errno
import functools
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import click

from ca_export import interrupts
from ca_export.errors import BadInputError, CheckFailedError, StageError
from ca_export.files import Output, guard, private_tempdir, staging, write_text
from ca_export.interrupts import Terminated
from ca_export.report import to_json
from ca_export.report.html import Run, render_html

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UNEXPECTED = 0, 1, 2, 3
EXIT_SIGNAL_BASE = 128


def progress(stage: str) -> None:
    """One progress line per stage, on stderr."""
    click.echo(f"[{stage}]", err=True)


def _quiet_torch(debug: bool) -> None:
    """Keep torch's and the exporters' own log lines out of the output unless debugging."""
    level = logging.DEBUG if debug else logging.CRITICAL
    for name in ("torch", "onnxscript", "coremltools"):
        logging.getLogger(name).setLevel(level)


def _fail(code: int, line: str, debug: bool, err: BaseException) -> NoReturn:
    if debug:
        traceback.print_exception(err)
    click.echo(line, err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """The error boundary of a command: one line and an exit code for every way out.

    Adds ``--debug`` (print the traceback) to the command.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        _quiet_torch(debug)
        try:
            with interrupts.handling(), private_tempdir():
                try:
                    return func(*args, **kwargs)
                except KeyboardInterrupt as err:
                    if interrupts.pending() is None:
                        raise _NoSignal(err) from err
                    raise
        except _NoSignal as err:
            _fail(EXIT_UNEXPECTED, f"error: {err} (--debug shows the traceback)", debug, err)
        except BadInputError as err:
            _fail(EXIT_BAD_INPUT, f"error: {err}", debug, err)
        except CheckFailedError as err:
            _fail(EXIT_CHECK_FAILED, f"check failed: {err}", debug, err)
        except Exception as err:
            if (full := _disk_full(err)) is None:
                _unexpected(err, debug)
            where = f" ({full.filename})" if full.filename else ""
            _fail(EXIT_BAD_INPUT, f"error: no space left on device{where}", debug, err)
        except KeyboardInterrupt as err:
            _fail(EXIT_SIGNAL_BASE + signal.SIGINT, "interrupted (SIGINT)", debug, err)
        except Terminated as err:
            _fail(EXIT_SIGNAL_BASE + err.signum, "terminated (SIGTERM)", debug, err)

    debug_option = click.option(
        "--debug", is_flag=True, help="On an error, print the traceback and torch's log lines."
    )
    return debug_option(wrapper)  # type: ignore[return-value]


class _NoSignal(Exception):
    """A ``KeyboardInterrupt`` raised while no SIGINT was received (by the model's code or a
    library it calls): an unexpected error (exit 3), not the user's interrupt (130)."""

    def __init__(self, err: KeyboardInterrupt) -> None:
        frames = traceback.extract_tb(err.__traceback__)
        last = frames[-1] if frames else None
        where = f", at {Path(last.filename).name}:{last.lineno} in {last.name}()" if last else ""
        super().__init__(f"KeyboardInterrupt raised with no SIGINT received{where}")


def _disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC behind ``err`` (its cause or context), if a full disk is the reason."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        current = current.__cause__ or current.__context__
    return None


def _unexpected(err: Exception, debug: bool) -> NoReturn:
    """Exit 3: an error ca-export did not expect (a bug, or a model it does not support)."""
    if isinstance(err, StageError):
        _fail(EXIT_UNEXPECTED, f"error: {err} (--debug shows the traceback)", debug, err)
    line = f"error: unexpected {type(err).__name__}: {_first_line(err)}"
    _fail(EXIT_UNEXPECTED, f"{line} (--debug shows the traceback)", debug, err)


class Job(Protocol):
    """A library job that names the files it reads and writes."""

    def reads(self) -> list[Path]: ...

    def writes(self) -> list[Output]: ...


class Report(Protocol):
    """A library report: a verdict and a JSON form."""

    @property
    def passed(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


def run_job(
    job: Job,
    run: Callable[..., Report],
    render: Callable[[Any], str],
    report_path: Path | None,
    reads: tuple[Path, ...] = (),
    in_place: tuple[Path, ...] = (),
    html_path: Path | None = None,
) -> None:
    """Guard every path, run the job, write its JSON (and HTML) report, print it; exit 1 if a
    check failed.

    Every file of the run (artifact, report, ...) is staged beside its target and all
    are renamed into place together, after the job and its report are complete.
    """
    reports = [Output(report_path, "json")] if report_path is not None else []
    reports += [Output(html_path, "html")] if html_path is not None else []
    guard([*job.reads(), *reads], [*job.writes(), *reports], in_place=in_place)
    with staging():
        report = run(job, progress=progress)
        if report_path is not None:
            write_text(to_json(report.to_dict()), report_path)
        if html_path is not None:
            write_text(render_html([Run(html_path.stem, report)]), html_path)
    click.echo(render(report))
    if not report.passed:
        names = ", ".join(_failed(report.to_dict())) or "see the report above"
        click.echo(f"check failed: {names}", err=True)
        sys.exit(EXIT_CHECK_FAILED)


def _failed(report: dict[str, Any]) -> list[str]:
    """The failed checks named in a report's JSON form: each top-level entry, entry of
    ``checks`` or item of a list (by its ``path``) whose ``passed`` is false."""
    found = []
    for key, value in report.items():
        entries = value.items() if key == "checks" and isinstance(value, dict) else [(key, value)]
        for name, entry in entries:
            items = entry if isinstance(entry, list) else [entry]
            for item in items:
                if isinstance(item, dict) and item.get("passed") is False:
                    found.append(str(item.get("path", name)))
    return found


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
