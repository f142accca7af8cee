"""Verification results in the forms CI systems read: JUnit XML and a Markdown summary.

An exact artifact gives one row (test case) per input x output; a lossy one (fp16, int8)
gives its skipped inputs and one row per output for the lossy gate, judged over all
inputs at once; the accuracy gate on ``--eval-data`` one more row (test case) per
artifact."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ca_export.files import MARKDOWN_HEADING, write_text
from ca_export.report.figures import AccuracyFigures
from ca_export.report.results import ArtifactResult, VerifyReport


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def junit_xml(report: VerifyReport) -> str:
    """One test suite per artifact, one test case per artifact x input x output, or per
    artifact x output for the lossy gate."""
    suites = ET.Element("testsuites", name="ca-export verify")
    for artifact in report.artifacts:
        name = Path(artifact.path).name
        _fill(ET.SubElement(suites, "testsuite", name=name), name, artifact)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _fill(suite: ET.Element, name: str, artifact: ArtifactResult) -> None:
    """The artifact's test cases in ``suite`` (class ``name``), then the suite's counts."""

    def case_named(title: str) -> ET.Element:
        return ET.SubElement(suite, "testcase", classname=name, name=title)

    def fail(test: ET.Element, message: str, kind: str) -> None:
        failure = ET.SubElement(test, "failure", message=message, type=kind)
        failure.text = _where(artifact)

    for case in artifact.cases:
        where = f"{_shape(case.input_shape)} {case.input}"
        if case.skipped:
            ET.SubElement(case_named(where), "skipped", message=case.skipped)
            continue
        for c in case.comparisons:
            test = case_named(f"{where} {c.name}")
            if not c.passed:
                fail(test, c.describe(), "ParityMismatch")
    for out in artifact.lossy.outputs if artifact.lossy else []:
        test = case_named(f"lossy gate {artifact.dtype} {out.name}")
        if not out.passed:
            fail(test, "; ".join(out.failures), "LossyGateFailed")
    accuracy = artifact.accuracy
    if accuracy is not None:
        test = case_named("accuracy")
        if not accuracy.ok:
            why = getattr(accuracy.figures, "failures", ()) or (accuracy.reason,)
            ET.SubElement(test, "failure", message="; ".join(why), type="AccuracyDropped")
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    suite.set("errors", "0")


def _where(artifact: ArtifactResult) -> str:
    """Where the outputs start to diverge, as one line."""
    loc = artifact.localization
    if loc is None:
        return ""
    if loc.first_divergence is None:
        return loc.note or "no single module diverges past the bound"
    return f"first divergence: module {loc.first_divergence}"


def markdown(report: VerifyReport) -> str:
    """A Markdown table of every comparison, and the verdict."""
    verdict = "passed" if report.passed else "FAILED"
    lines = [
        f"{MARKDOWN_HEADING} {report.source} — {verdict}",
        "",
        "| artifact | input | shape | output | max abs err | rel err | cosine | PSNR dB "
        "| top-1 | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for artifact in report.artifacts:
        name = Path(artifact.path).name
        for case in artifact.cases:
            if case.skipped:
                shape = _shape(case.input_shape)
                skipped = f"skipped: {case.skipped}"
                lines.append(f"| {name} | {case.input} | {shape} | | | | | | | {skipped} |")
                continue
            for c in case.comparisons:
                top1 = "" if c.top1 is None else f"{c.top1:.2f}"
                result = "pass" if c.passed else "**FAIL**"
                lines.append(
                    f"| {name} | {case.input} | {_shape(case.input_shape)} | {c.name} | "
                    f"{c.max_abs_err:.3g} | {c.rel_err:.3g} | {c.cosine:.9f} | {c.psnr:.1f} | "
                    f"{top1} | {result} |"
                )
        where = _where(artifact)
        if where:
            lines += ["", f"{name}: {where}"]
    gates = [(Path(a.path).name, a.lossy) for a in report.artifacts if a.lossy is not None]
    if gates:
        lines += [
            "",
            "| artifact | lossy gate | output | inputs | top-1 | top-1 in top-5 | min cosine "
            "| max rel err | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for name, gate in gates:
        for out in gate.outputs:
            result = "pass" if out.passed else "**FAIL**: " + "; ".join(out.failures)
            lines.append(
                f"| {name} | {gate.precision} | {out.name} | {len(gate.inputs)} | "
                f"{_share(out.top1, out.rows)} | {_share(out.top1_in_top5, out.rows)} | "
                f"{out.min_cosine:.4f} | {out.max_rel_err:.3g} | {result} |"
            )
    return "\n".join(lines + _accuracy_rows(report)) + "\n"


def _accuracy_rows(report: VerifyReport) -> list[str]:
    """The accuracy gate of each artifact it ran on, as a table (none without any)."""
    rows = []
    for artifact in report.artifacts:
        check = artifact.accuracy
        if check is None:
            continue
        name = Path(artifact.path).name
        figures = check.figures
        if not isinstance(figures, AccuracyFigures):
            rows.append(f"| {name} | | | | | | | {check.verdict.value}: {check.reason} |")
            continue
        result = "pass" if check.ok else "**FAIL**: " + "; ".join(figures.failures)
        rows.append(
            f"| {name} | {figures.samples} | {100 * figures.reference_top1:.2f} % | "
            f"{100 * figures.top1:.2f} % | {100 * figures.reference_top5:.2f} % | "
            f"{100 * figures.top5:.2f} % | {figures.drop:.2f} (<= {figures.max_drop:g}) | "
            f"{result} |"
        )
    if not rows:
        return []
    return [
        "",
        "| artifact | labelled samples | top-1 fp32 | top-1 | top-5 fp32 | top-5 "
        "| drop (points) | result |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _share(share: float | None, rows: int) -> str:
    """``7/8`` for a share of rows; empty for an output that is not class scores."""
    return "" if share is None else f"{round(share * rows)}/{rows}"


def write_summaries(
    report: VerifyReport, junit: Path | None, summary: Path | None, step_summary: Path | None
) -> None:
    """Write JUnit XML and the Markdown summary where asked; append the summary to the CI
    step summary file (``$GITHUB_STEP_SUMMARY``) if one is given."""
    text = markdown(report)
    if junit is not None:
        write_text(junit_xml(report), junit)
    if summary is not None:
        write_text(text, summary)
    if step_summary is not None:
        with open(step_summary, "a") as handle:
            handle.write(text)
