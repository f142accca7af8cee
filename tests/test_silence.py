"""``silence.silenced``: native and Python output inside the block is dropped, and the
terminal is back after it, however it ends."""

from __future__ import annotations

import logging
import os

import pytest

from ca_export.silence import silenced


def _speak(tag: str) -> None:
    print(f"print {tag}")
    os.write(1, f"fd1 {tag}\n".encode())
    os.write(2, f"fd2 {tag}\n".encode())
    logging.getLogger("ca_export.test_silence").warning("log %s", tag)


def test_native_and_python_output_is_dropped(capfd: pytest.CaptureFixture[str]) -> None:
    with silenced():
        _speak("inside")
    _speak("after")
    out, err = capfd.readouterr()
    assert "inside" not in out + err
    assert "print after" in out and "fd1 after" in out and "fd2 after" in err


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_terminal_is_back_after_an_error(
    error: type[BaseException], capfd: pytest.CaptureFixture[str]
) -> None:
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    with pytest.raises(error), silenced():
        _speak("inside")
        raise error
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    _speak("after")
    out, err = capfd.readouterr()
    assert "inside" not in out + err and "fd2 after" in err
