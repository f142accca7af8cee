"""The HTML page, parsed as a browser would read its structure: its sections, figures and
the tables beneath them hold what the JSON reports hold."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ca_export.report import load, to_json
from ca_export.report.html import Run, render_html
from cli.main import cli

KINDS = ("export", "optimize", "verify", "bench")


class Page(HTMLParser):
    """Sections by id; per section, its figures (the text inside each SVG) and its tables
    (rows of cell texts), each keyed by ``data-figure`` / ``data-table``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, list[Any]]] = {}
        self.section = ""
        self.figure: list[str] | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.table: list[list[str]] | None = None
        self.tags: list[str] = []
        self.verdict = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.section = a["id"] or ""
            self.sections[self.section] = {"figures": [], "tables": []}
        elif tag == "figure":
            self.figure = []
            self.sections[self.section]["figures"].append((a["data-figure"], self.figure))
        elif tag == "table":
            self.table = []
            self.sections[self.section]["tables"].append((a.get("data-table"), self.table))
        elif tag == "tr" and self.table is not None:
            self.row = []
            self.table.append(self.row)
        elif tag in ("td", "th"):
            self.cell = []
        if "data-verdict" in a:
            self.verdict = a["data-verdict"] or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.figure = None
        elif tag == "table":
            self.table = None
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.figure is not None and data.strip():
            self.figure.append(data.strip())

    def tables(self, section: str, name: str) -> list[list[list[str]]]:
        """The body rows of every table ``name`` in ``section`` (one per run or figure)."""
        found = self.sections[section]["tables"]
        return [rows[1:] for table, rows in found if table == name]

    def figures(self, section: str, name: str) -> list[list[str]]:
        """The texts of every figure ``name`` in ``section``."""
        return [texts for figure, texts in self.sections[section]["figures"] if figure == name]


@pytest.fixture(scope="module")
def forms(run_reports: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON form of each kind of report, as a file would hold it."""
    return {kind: json.loads(to_json(run_reports[kind].to_dict())) for kind in KINDS}


@pytest.fixture(scope="module")
def page_text(forms: dict[str, dict[str, Any]]) -> str:
    """The page of every kind of report, each loaded from its JSON form."""
    return render_html([Run(kind, load(forms[kind])) for kind in KINDS])


@pytest.fixture(scope="module")
def page(page_text: str) -> Page:
    return Page(page_text)


def _worst(comparisons: list[tuple[str, float]]) -> dict[str, float]:
    worst: dict[str, float] = {}
    for name, margin in comparisons:
        worst[name] = max(worst.get(name, margin), margin)
    return worst


def _margins(gate: dict[str, Any], prefix: str) -> list[tuple[str, float]]:
    return [
        (prefix + c["name"], c["margin"]) for case in gate["cases"] for c in case["comparisons"]
    ]


def test_the_summary_gives_each_verdict(page: Page, forms: dict[str, dict[str, Any]]) -> None:
    (rows,) = page.tables("summary", "summary")
    verdicts = {row[0]: row[3] for row in rows}
    assert verdicts == {
        "export": "passed" if forms["export"]["passed"] else "FAILED",
        "optimize": "passed" if forms["optimize"]["passed"] else "FAILED",
        "verify": "FAILED",
        "bench": "passed",
    }
    assert page.verdict == "FAILED"
    assert {row[0]: row[4] for row in rows}["verify"] == forms["verify"]["artifacts"][0]["path"]


def test_parity_bars_are_each_block_against_its_bound(
    page: Page, forms: dict[str, dict[str, Any]]
) -> None:
    parity = forms["export"]["parity"]
    blocks = _worst(
        [
            (c["name"], c["margin"])
            for case in parity["blocks"]["cases"]
            for c in case["comparisons"]
        ]
    )
    outputs = _worst(
        [
            (f"output {c['name']}", c["margin"])
            for case in parity["cases"]
            for c in case["comparisons"]
        ]
    )
    export_table, verify_table = page.tables("parity", "parity")
    assert [row[0] for row in export_table] == [*blocks, *outputs]
    for (name, margin), row in zip({**blocks, **outputs}.items(), export_table, strict=True):
        assert float(row[1]) == pytest.approx(margin, rel=1e-3), name
    export_figure = page.figures("parity", "parity")[0]
    assert all(name in export_figure for name in blocks) and "bound" in export_figure
    assert max(float(row[1]) for row in verify_table) > 1


def test_the_failed_artifact_is_localised_layer_by_layer(
    page: Page, forms: dict[str, dict[str, Any]]
) -> None:
    loc = forms["verify"]["artifacts"][0]["localization"]
    (rows,) = page.tables("localisation", "localisation")
    assert [row[0] for row in rows] == [layer["module"] for layer in loc["layers"]]
    assert [row[3] == "yes" for row in rows] == [layer["ca_block"] for layer in loc["layers"]]
    (texts,) = page.figures("localisation", "localisation")
    assert "rel err" in texts


def test_latency_shows_every_timing_and_its_ratios(
    page: Page, forms: dict[str, dict[str, Any]]
) -> None:
    timings = forms["bench"]["timings"]
    (rows,) = page.tables("latency", "latency")
    assert [row[0] for row in rows] == [f"{t['name']}@{t['layout']}" for t in timings]
    for row, t in zip(rows, timings, strict=True):
        assert float(row[2]) == pytest.approx(t["p50_ms"], rel=1e-3)
    stock = next(t["p50_ms"] for t in timings if t["name"] == "stock")
    baseline = next(t["p50_ms"] for t in timings if t["name"] == "baseline")
    assert float(rows[1][4]) == pytest.approx(timings[1]["p50_ms"] / stock, rel=1e-3)
    assert float(rows[0][5]) == pytest.approx(stock / baseline, rel=1e-3)
    (texts,) = page.figures("latency", "latency")
    assert {"stock@blocked", "baseline@blocked"} <= set(texts)
    (ops,) = page.tables("latency", "top-ops")
    top = max(forms["bench"]["breakdown"]["stock"].items(), key=lambda item: item[1])
    assert ops[0][0] == top[0] and float(ops[0][1]) == pytest.approx(top[1], rel=1e-3)


def test_op_counts_and_passes_per_block(page: Page, forms: dict[str, dict[str, Any]]) -> None:
    blocks = forms["export"]["ca_blocks"]
    before: dict[str, int] = {}
    for block in blocks:
        for op, n in block["ca_only_nodes_before"].items():
            before[op] = before.get(op, 0) + n
    export_ops = page.tables("ops", "ops")[0]
    assert {row[0]: int(row[1]) for row in export_ops} == before
    assert all(row[2] == "0" for row in export_ops)
    (passes, *_) = page.tables("passes", "passes")
    expected = [
        (block["id"], p["name"], "applied" if block["id"] in p["applied"] else "skipped")
        for block in blocks
        for p in forms["export"]["passes"]
        if block["id"] in p["applied"] or block["id"] in p["skipped"]
    ]
    assert [(row[0], row[1], row[2]) for row in passes] == expected


def test_the_page_is_self_contained(page_text: str) -> None:
    text = page_text
    assert "<script" not in text and "<link" not in text and "<img" not in text
    assert "url(" not in text.replace("url(#", "")
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert links and all(link.startswith("#") for link in links)


def test_report_command_writes_one_page_of_several_runs(
    run_reports: dict[str, Any], tmp_path: Path
) -> None:
    paths = []
    for kind in KINDS:
        paths.append(tmp_path / f"{kind}.json")
        paths[-1].write_text(to_json(run_reports[kind].to_dict()))
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["report", *map(str, paths), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = Page(out.read_text())
    (rows,) = page.tables("summary", "summary")
    assert [row[0] for row in rows] == list(KINDS)
    (tmp_path / "broken.json").write_text('{"schema": "something else"}')
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "broken.json"), "-o", str(out)])
    assert result.exit_code == 2 and "not a ca-export report" in result.output
    result = CliRunner().invoke(cli, ["report", str(paths[0]), "-o", str(paths[1])])
    assert result.exit_code == 2 and "not a html file" in result.output
