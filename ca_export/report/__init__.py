"""What each run found, measured and decided: result objects and their renderers.

``checks`` holds the typed verdicts (``Verdict``, ``Check``), ``figures`` the typed
figures each check carries, ``results`` the reports and their JSON form, ``text`` the
summaries the CLI prints, ``ci`` verify's JUnit XML and Markdown, and ``html`` the
self-contained page with plots. Every renderer reads the typed objects.

The JSON form (schema ``ca-export.report/4``) is described in ``docs/report-schema.md``;
``load`` reads any report's JSON back into its typed object.
"""

from ca_export.report.checks import Check, Verdict
from ca_export.report.figures import GateFigures
from ca_export.report.results import (
    SCHEMA,
    ArtifactResult,
    BenchReport,
    BlockReport,
    ExportReport,
    InspectReport,
    OptimizeReport,
    VerifyCase,
    VerifyReport,
    gate_check,
    load,
    to_json,
)
from ca_export.report.text import (
    LOSSY_REFERENCE,
    lossy_lines,
    pass_lines,
    render_bench,
    render_export,
    render_inspect,
    render_optimize,
    render_verify,
)

__all__ = [
    "LOSSY_REFERENCE",
    "SCHEMA",
    "ArtifactResult",
    "BenchReport",
    "BlockReport",
    "Check",
    "ExportReport",
    "GateFigures",
    "InspectReport",
    "OptimizeReport",
    "Verdict",
    "VerifyCase",
    "VerifyReport",
    "gate_check",
    "load",
    "lossy_lines",
    "pass_lines",
    "render_bench",
    "render_export",
    "render_inspect",
    "render_optimize",
    "render_verify",
    "to_json",
]
