"""The accuracy gate's and ``--keep-fp32 auto``'s figures: they load back from JSON as
typed objects and every renderer shows them (built by hand: no model runs here)."""

from __future__ import annotations

import json

from ca_export.report import (
    ArtifactResult,
    Check,
    ExportReport,
    Verdict,
    VerifyReport,
    load,
    render_export,
    render_verify,
    to_json,
)
from ca_export.report.ci import junit_xml, markdown
from ca_export.report.figures import (
    AccuracyFigures,
    KeepAuto,
    KeptFp32,
    LossyFigures,
    SearchStep,
    Sensitivity,
)
from ca_export.report.html import Run, render_html
from ca_export.verify.tolerances import tolerance


def _accuracy(top1: float, max_drop: float = 1.0) -> Check:
    drop = round(100 * (0.9833 - top1), 4)
    failures = () if drop <= max_drop else (f"top-1 drop {drop:.2f} points > {max_drop:g}",)
    figures = AccuracyFigures(
        data="eval",
        output="logits",
        samples=360,
        classes=10,
        reference="PyTorch fp32",
        artifact="ONNX int8",
        reference_top1=0.9833,
        reference_top5=1.0,
        top1=top1,
        top5=0.9972,
        drop=drop,
        max_drop=max_drop,
        failures=failures,
    )
    return Check.judged("accuracy", not failures, figures)


def _export() -> ExportReport:
    search = KeepAuto(
        all_int8="lossy gate failed, min cosine 0.6700",
        sensitivity=(Sensitivity("stem", 0.2, False, "x"), Sensitivity("head", 0.9, True, "y")),
        steps=(SearchStep(("stem",), "lossy gate passed, min cosine 0.9990"),),
        kept=("stem",),
        passed=True,
    )
    bounds = {"top1": 0.75, "top1_in_top5": 1.0, "cosine": 0.95, "rel": 0.8, "atol": None}
    kept = KeptFp32(("stem",), 3)
    lossy = LossyFigures("int8", bounds=bounds, kept_fp32=kept, keep_fp32_auto=search)
    report = ExportReport("digits_ca", "0", "onnx", [1, 3, 32, 32], False, True)
    report.add(Check.judged("precision", True, lossy))
    report.add(_accuracy(0.9806))
    return report


def _verify() -> VerifyReport:
    tol = tolerance("float32", "onnxruntime-cpu")
    failed = ArtifactResult("m_int8.onnx", "int8", tol, accuracy=_accuracy(0.12))
    why = "the artifact cannot be run here: op x"
    unverified = Check("accuracy", Verdict.NOT_VERIFIED, why, accepted=True)
    other = ArtifactResult("m.mlpackage", "fp32", tol, accuracy=unverified)
    return VerifyReport("digits_ca", [failed, other])


def test_accuracy_and_search_figures_round_trip() -> None:
    for report in (_export(), _verify()):
        text = to_json(report.to_dict())
        loaded = load(json.loads(text))
        assert to_json(loaded.to_dict()) == text
        assert loaded == report


def test_renderers_show_accuracy_and_the_search() -> None:
    export = render_export(_export())
    assert "--keep-fp32 auto: every node int8: lossy gate failed" in export
    assert "kept fp32: stem (within bounds)" in export
    assert "top-1 98.33 % -> 98.06 % (drop 0.27 points, bound 1)" in export
    verify = _verify()
    assert "check accuracy: FAILED" in render_verify(verify)
    table = markdown(verify)
    assert "| m_int8.onnx | 360 | 98.33 % | 12.00 % |" in table
    assert "**FAIL**: top-1 drop 86.33 points > 1" in table
    assert "not verified: the artifact cannot be run here" in table
    junit = junit_xml(verify)
    assert 'name="accuracy"' in junit and 'type="AccuracyDropped"' in junit
    page = render_html([Run("verify", verify), Run("export", _export())])
    assert 'data-table="accuracy"' in page and "m_int8.onnx" in page
