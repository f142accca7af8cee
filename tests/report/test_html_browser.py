"""The HTML page as a person sees it: headless Chromium renders it without a console error,
and the screenshot is not blank. A page that logs an error must be caught (negative twin).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ca_export.report.html import Run, render_html

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def _browse(page: Path, shot: Path) -> str:
    """Render ``page`` in headless Chromium to ``shot``; Chromium's log (stderr)."""
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed: apt-get install -y chromium")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={shot.parent / 'profile'}",
        "--window-size=1200,1600",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return done.stderr


def _blank(shot: Path) -> bool:
    """Whether a screenshot is (nearly) one flat colour: under 1% dark pixels or no contrast."""
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    return bool((pixels < 128).mean() <= 0.01 or pixels.std() <= 20)


def _console_lines(log: str) -> list[str]:
    """The lines of Chromium's log that the page's console wrote."""
    return [line for line in log.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def page_text(run_reports: dict[str, Any]) -> str:
    return render_html([Run(kind, report) for kind, report in run_reports.items()])


def test_the_page_renders_without_console_errors(page_text: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(page_text)
    log = _browse(page, tmp_path / "shot.png")
    assert _console_lines(log) == []
    assert Image.open(tmp_path / "shot.png").size == (1200, 1600)
    assert not _blank(tmp_path / "shot.png")


def test_a_console_error_is_caught(page_text: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(page_text.replace("</body>", "<script>console.error('boom')</script></body>"))
    assert any("boom" in line for line in _console_lines(_browse(page, tmp_path / "shot.png")))


def test_a_blank_page_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>")
    _browse(page, tmp_path / "shot.png")
    assert _blank(tmp_path / "shot.png")
