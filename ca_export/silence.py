"""Keep what converters print to the terminal out of a command's output.

Converters print from C++ (absl and TensorFlow logs written to file descriptor 2 before
any logging is set up) and from Python (``print``, ``logging.warning`` on loggers with no
handler). ``contextlib.redirect_stdout`` reaches only the second kind; ``silenced`` points
descriptors 1 and 2 at a temporary file for the block as well, and puts them back after
it, however it ends.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Discard everything written to stdout and stderr inside the block, by Python or by
    native code."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    yield
            finally:
                for stream in (sys.__stdout__, sys.__stderr__):
                    if stream is not None:
                        stream.flush()
                for fd, original in zip((1, 2), saved, strict=True):
                    os.dup2(original, fd)
    finally:
        for fd in saved:
            os.close(fd)
