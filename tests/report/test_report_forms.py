"""Every kind of report's JSON form loads back into its typed objects, figures and all."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ca_export.report import SCHEMA, load, to_json
from ca_export.report.figures import GateFigures, StructureFigures


@pytest.mark.parametrize("kind", ["export", "optimize", "verify", "bench"])
def test_a_report_round_trips_through_json(run_reports: dict[str, Any], kind: str) -> None:
    report = run_reports[kind]
    text = to_json(report.to_dict())
    data = json.loads(text)
    assert (data["schema"], data["kind"]) == (SCHEMA, kind)
    loaded = load(data)
    assert type(loaded) is type(report)
    assert to_json(loaded.to_dict()) == text


def test_checks_load_back_as_typed_figures(run_reports: dict[str, Any]) -> None:
    loaded = load(json.loads(to_json(run_reports["export"].to_dict())))
    parity, structure = loaded.parity.figures, loaded.structure.figures
    assert isinstance(parity, GateFigures) and isinstance(parity.blocks, GateFigures)
    assert parity.max_margin == run_reports["export"].parity.figures.max_margin
    assert isinstance(structure, StructureFigures) and structure.ca_only_nodes_after == 0
    bench = load(json.loads(to_json(run_reports["bench"].to_dict())))
    assert all(len(t.samples_ms) == t.runs == 5 for t in bench.timings)


def test_load_refuses_what_is_not_a_report(run_reports: dict[str, Any]) -> None:
    data = run_reports["verify"].to_dict()
    with pytest.raises(ValueError, match="not a ca-export report"):
        load(data | {"kind": "nothing"})
    with pytest.raises(ValueError, match="schema"):
        load(data | {"schema": "ca-export.report/3"})
