"""Verification results in the forms CI systems read: JUnit XML and a Markdown summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from ca_export.files import MARKDOWN_HEADING, write_text

if TYPE_CHECKING:
    from ca_export.report import ArtifactResult, VerifyReport


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def junit_xml(report: VerifyReport) -> str:
    """One test suite per artifact, one test case per artifact x input x output."""
    suites = ET.Element("testsuites", name="ca-export verify")
    for artifact in report.artifacts:
        name = Path(artifact.path).name
        suite = ET.SubElement(suites, "testsuite", name=name)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for case in artifact.cases:
            if case.skipped:
                counts["tests"] += 1
                counts["skipped"] += 1
                test = ET.SubElement(
                    suite,
                    "testcase",
                    classname=name,
                    name=f"{_shape(case.input_shape)} {case.input}",
                )
                ET.SubElement(test, "skipped", message=case.skipped)
                continue
            for c in case.comparisons:
                counts["tests"] += 1
                test = ET.SubElement(
                    suite,
                    "testcase",
                    classname=name,
                    name=f"{_shape(case.input_shape)} {case.input} {c.name}",
                )
                if not c.passed:
                    counts["failures"] += 1
                    message = (
                        f"rel err {c.rel_err:.3g}, max abs err {c.max_abs_err:.3g}, "
                        f"cosine {c.cosine:.9f}"
                    )
                    failure = ET.SubElement(test, "failure", message=message, type="ParityMismatch")
                    failure.text = _where(artifact)
        for key, value in counts.items():
            suite.set(key, str(value))
        suite.set("errors", "0")
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


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
    return "\n".join(lines) + "\n"


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
