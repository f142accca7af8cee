"""What each run found, measured and decided: result objects and their renderers."""

from ca_export.report.results import (
    ArtifactResult,
    BlockReport,
    ExportReport,
    InspectReport,
    OptimizeReport,
    VerifyCase,
    VerifyReport,
    gate_summary,
    to_json,
)
from ca_export.report.text import (
    LOSSY_REFERENCE,
    pass_lines,
    render_export,
    render_inspect,
    render_optimize,
    render_verify,
)

__all__ = [
    "LOSSY_REFERENCE",
    "ArtifactResult",
    "BlockReport",
    "ExportReport",
    "InspectReport",
    "OptimizeReport",
    "VerifyCase",
    "VerifyReport",
    "gate_summary",
    "pass_lines",
    "render_export",
    "render_inspect",
    "render_optimize",
    "render_verify",
    "to_json",
]
