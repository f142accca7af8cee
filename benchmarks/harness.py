"""What the benchmark scripts share: the ``--cache``, ``--size`` and ``--runs`` options
and the folder their files go to."""

from __future__ import annotations

import tempfile
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ca_export.bench import CLOCKS


def parser(doc: str | None, runs: int, what: str = "the files") -> ArgumentParser:
    """A parser described by ``doc``'s first paragraph, with the shared options."""
    made = ArgumentParser(description=(doc or "").split("\n\n")[0])
    made.add_argument("--cache", type=Path, help=f"reuse/keep {what} in this folder")
    made.add_argument("--size", type=int, default=224)
    made.add_argument("--runs", type=int, default=runs)
    return made


def add_clock(parser: ArgumentParser) -> None:
    """``--clock``: wall time, or the timing thread's CPU time (``ca_export.bench.CLOCKS``)."""
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="thread: CPU time of the timing thread (ncnn on one thread; steadier under load)",
    )


@contextmanager
def work_folder(cache: Path | None) -> Iterator[Path]:
    """``cache``, made if missing and kept, or a temporary folder removed after the block."""
    with tempfile.TemporaryDirectory() as temp:
        folder = cache or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder


def table(heads: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``rows`` under ``heads``."""
    lines = [heads, ["---"] * len(heads), *rows]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in lines)
