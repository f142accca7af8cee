"""A LiteRT report's structure (partitions, ops outside XNNPACK, TRANSPOSE left by block)
loads back from JSON and shows in the text summary and the HTML page."""

from __future__ import annotations

import json

from ca_export.export.executorch import OutsideOp
from ca_export.report import Check, ExportReport, Verdict, load, render_export, to_json
from ca_export.report.figures import StructureFigures
from ca_export.report.html import Run, render_html


def litert_report() -> ExportReport:
    """A report shaped as ``ca-export litert`` writes it: one CA TRANSPOSE, one op outside."""
    report = ExportReport("seed_ca", "0", "litert", [1, 3, 32, 32], False, True, target="litert")
    structure = StructureFigures(
        2,
        "TRANSPOSE and ops outside XNNPACK",
        segments=2,
        outside=(OutsideOp("RESIZE_NEAREST_NEIGHBOR", "op 7", "features.ca", 0),),
        transposes=(OutsideOp("TRANSPOSE", "op 3", "features.ca", 0),),
    )
    report.structure = Check("structure", Verdict.NOT_RUN, "no structure gate", structure, True)
    return report


def test_a_litert_structure_round_trips_through_json() -> None:
    report = litert_report()
    text = to_json(report.to_dict())
    loaded = load(json.loads(text))
    assert loaded == report
    assert loaded.structure.figures.transposes[0].block == 0
    assert to_json(loaded.to_dict()) == text


def test_the_summary_and_the_page_name_the_transpose_and_the_op_outside() -> None:
    report = litert_report()
    text = render_export(report)
    assert "XNNPACK delegate segments: 2" in text
    assert "  outside: RESIZE_NEAREST_NEIGHBOR (features.ca)" in text
    assert "  TRANSPOSE left: op 3 (features.ca)" in text
    page = render_html([Run("litert", report)])
    assert "1 op(s) outside; 1 TRANSPOSE op(s)" in page
    assert "<td>op 3</td>" in page and "<td>op 7</td>" in page
