"""The user's interrupt wins, even inside a library that catches every exception.

A command runs under ``handling()``: SIGINT and SIGTERM are recorded, then raised in
the main thread (``KeyboardInterrupt``, ``Terminated``). Third-party code may swallow
that exception (coremltools' converter has bare ``except:`` clauses; an exception
raised inside a finaliser is only printed), so the signal stays recorded and ``check``
raises it again: every pipeline stage calls it when it starts and when it ends, and the
code that wraps a third-party call calls it before turning a failure into an error.
Inside ``deferred()`` (the commit of a run's outputs) a signal is only recorded; the
commit looks at ``pending()`` before it lets the new outputs stand.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so every cleanup block runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


_pending: int | None = None
_deferred = 0


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _record(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _pending is None:
        _pending = signum
    if not _deferred:
        _raise(signum)


def pending() -> int | None:
    """The signal received during this command, if any."""
    return _pending


def check() -> None:
    """Raise the recorded signal again (a library may have swallowed it); else nothing."""
    if _pending is not None and not _deferred:
        _raise(_pending)


@contextmanager
def handling() -> Iterator[None]:
    """Record SIGINT and SIGTERM and raise them, for the length of a command."""
    global _pending
    _pending = None
    previous = {s: signal.signal(s, _record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending = None


@contextmanager
def deferred() -> Iterator[None]:
    """Only record signals inside this block; the caller checks ``pending()`` at its end."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
