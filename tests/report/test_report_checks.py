"""Typed checks: a report passes only on an explicit pass of every check; its JSON round-trips."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ca_export.report import (
    Check,
    ExportReport,
    OptimizeReport,
    Verdict,
    render_export,
    to_json,
)
from ca_export.report.figures import ValueFigures
from ca_export.report.results import SCHEMA

Exported = Callable[[str, bool], tuple[ExportReport, Path]]


@pytest.fixture
def passing(exported: Exported) -> ExportReport:
    """A copy of the seed model's ONNX export report, which passed."""
    report = copy.deepcopy(exported("seed_ca", False)[0])
    assert report.passed and report.expected == ["opset"], report.to_dict()["checks"]
    return report


def test_export_report_round_trips_through_json(passing: ExportReport) -> None:
    data = passing.to_dict()
    assert data["schema"] == SCHEMA and data["passed"] is True
    assert data["parity"]["passed"] and data["parity"]["verdict"] == "passed"
    assert ExportReport.from_dict(data) == passing
    text = to_json(data)
    assert to_json(ExportReport.from_dict(json.loads(text)).to_dict()) == text


def test_from_dict_refuses_another_schema(passing: ExportReport) -> None:
    with pytest.raises(ValueError, match="schema"):
        ExportReport.from_dict(passing.to_dict() | {"schema": "ca-export.report/1"})


def test_removing_any_check_fails_the_report(passing: ExportReport) -> None:
    for gate in ("parity", "structure"):
        report = copy.deepcopy(passing)
        setattr(report, gate, None)
        assert not report.passed, gate
        assert not report.to_dict()["passed"]
    assert passing.checks
    for name in passing.checks:
        report = copy.deepcopy(passing)
        del report.checks[name]
        assert not report.passed, name


def test_a_check_not_run_fails_unless_accepted(passing: ExportReport) -> None:
    for name in ("parity", "structure", *passing.checks):
        report = copy.deepcopy(passing)
        not_run = Check(name, Verdict.NOT_RUN, "not reached")
        if name in report.checks:
            report.add(not_run)
        else:
            setattr(report, name, not_run)
        assert not report.passed, name
        assert report.to_dict()["passed"] is False
    report = copy.deepcopy(passing)
    report.add(Check("prediction", Verdict.NOT_RUN, "cannot predict here", accepted=True))
    assert report.passed
    assert "check prediction: not run (cannot predict here)" in render_export(report)


def test_not_verified_fails_unless_allowed(passing: ExportReport) -> None:
    reason = "fp16 gate not verified: op sin"
    report = copy.deepcopy(passing)
    report.add(Check("mil_parity", Verdict.NOT_VERIFIED, reason))
    assert not report.passed
    assert f"check mil_parity: NOT VERIFIED ({reason})" in render_export(report)
    assert report.to_dict()["checks"]["mil_parity"] | {"accepted": False} == {
        "name": "mil_parity",
        "verdict": "not verified",
        "ran": True,
        "passed": False,
        "accepted": False,
        "reason": reason,
    }
    report.add(Check("mil_parity", Verdict.NOT_VERIFIED, reason, accepted=True))
    assert report.passed
    assert f"check mil_parity: not verified ({reason})" in render_export(report)


def test_an_empty_report_fails() -> None:
    assert not ExportReport("m", "0", "onnx", [1, 3, 8, 8], False, True, 18).passed
    assert not OptimizeReport("m.onnx", "0", 18, {"x": [1, 3, 8, 8]}).passed


def test_a_check_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ValueError, match="only a check not run"):
        Check("io", Verdict.PASSED, accepted=True)
    with pytest.raises(ValueError, match="needs a reason"):
        Check("prediction", Verdict.NOT_RUN)
    figures = ValueFigures({"found": 1})
    assert Check.judged("io", True, figures).to_dict() == {
        "name": "io",
        "verdict": "passed",
        "ran": True,
        "passed": True,
        "kind": "values",
        "values": {"found": 1},
    }
