"""The accuracy stage of the exports: the artifact against the fp32 model on ``--eval-data``.

It runs after the exact and lossy gates passed and before anything is written
(``verify.accuracy``); a model without a classifier output gets a notice instead. The
stage returns an ``Accuracy``; the job puts it in its report.
"""

from __future__ import annotations

from dataclasses import dataclass

from ca_export.pipeline.common import Prepared, Stages
from ca_export.report import Check, ExportReport, Verdict
from ca_export.verify.accuracy import accuracy_check, measure
from ca_export.verify.lossy import torch_runner
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.runtime import Runner

REFERENCE = "PyTorch fp32"


@dataclass(frozen=True)
class Accuracy:
    """The accuracy stage's result: the ``accuracy`` check, or the notice saying why none
    was measured; neither without a labelled set."""

    check: Check | None = None
    notice: str | None = None

    def record(self, report: ExportReport) -> None:
        """Put the check (expected, once there is one) or the notice in ``report``."""
        if self.check is not None:
            report.expected.append("accuracy")
            report.add(self.check)
        if self.notice is not None:
            report.notices.append(self.notice)


def accuracy_stage(prepared: Prepared, run: Runner, artifact: str, stage: Stages) -> Accuracy:
    """Measure and gate the artifact's accuracy (``run``) on the job's labelled set, if any."""
    eval_set = prepared.eval_set
    if eval_set is None:
        return Accuracy()
    with stage("accuracy"):
        names = prepared.traced.output_names
        reference = torch_runner(prepared.module)
        try:
            measured = measure(reference, run, eval_set, names, prepared.gates.max_drop)
        except Unsupported as err:
            allowed = prepared.gates.allow_unverified
            why = f"the artifact cannot be run here: {err}"
            return Accuracy(Check("accuracy", Verdict.NOT_VERIFIED, why, accepted=allowed))
    check = accuracy_check(measured, eval_set, REFERENCE, artifact)
    if check is None:
        return Accuracy(
            notice=f"--eval-data: no output is class scores [1, K>={len(eval_set.classes)}], "
            "so no accuracy is measured; its samples serve as real inputs of the lossy gates"
        )
    return Accuracy(check)
