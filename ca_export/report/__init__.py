"""What each run found, measured and decided: result objects and their renderers.

``checks`` holds the typed verdicts (``Verdict``, ``Check``), ``results`` the reports,
``text`` the summaries the CLI prints and ``ci`` verify's JUnit XML and Markdown.

JSON schema ``ca-export.report/3`` (``to_dict``; ``ExportReport.from_dict`` reads it back):

- ``schema``: ``"ca-export.report/3"``; ``passed``: the report's verdict.
- ``ca_blocks``: each block with its ``id`` (module, then the node name of its output
  multiply: unique where two blocks run in one module's forward); ``passes``: per pass,
  ``applied`` and ``skipped`` keyed by that ``id``.
- ``parity`` and ``structure`` (export and optimize): the two gates, each a check or
  null when it is missing (which fails the report).
- ``checks``: every other check by name. ``expected`` (export): the names this run
  must hold; a missing one fails the report.
- A check is ``{"verdict", "ran", "passed", "accepted", "reason", ...figures}``:
  ``verdict`` is ``passed``, ``failed``, ``not run`` or ``not verified``; ``ran`` is
  false only for ``not run``; ``passed`` says whether the check counts as passed (an
  explicit pass, or ``accepted``); ``accepted`` (only for ``not run`` and ``not
  verified``) says the run declares it acceptable, and ``reason`` says why. The figures
  (``max_rel_err``, ``cases``, ``failures``, ...) are as in version 1.

Version 2 keyed pass results by module, so two blocks in one module overwrote each other.
Version 1 had no ``schema``; a check without ``ran`` was skipped, and a missing gate passed.
"""

from ca_export.report.checks import Check, Verdict
from ca_export.report.results import (
    ArtifactResult,
    BlockReport,
    ExportReport,
    InspectReport,
    OptimizeReport,
    VerifyCase,
    VerifyReport,
    gate_check,
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
    "Check",
    "ExportReport",
    "InspectReport",
    "OptimizeReport",
    "Verdict",
    "VerifyCase",
    "VerifyReport",
    "gate_check",
    "gate_summary",
    "pass_lines",
    "render_export",
    "render_inspect",
    "render_optimize",
    "render_verify",
    "to_json",
]
