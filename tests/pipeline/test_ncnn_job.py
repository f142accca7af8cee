"""The ncnn job without ncnn: names, precisions, and the hint a size-only failure gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ca_export.errors import BadInputError
from ca_export.pipeline.ncnn import NcnnJob, pinned_elsewhere
from ca_export.verify.metrics import compare
from ca_export.verify.parity import CaseResult, GateResult
from ca_export.verify.tolerances import tolerance

SHAPE = (1, 3, 32, 32)


def test_job_files_from_a_stem_or_a_param_name() -> None:
    for given in ("out/m", "out/m.ncnn.param"):
        job = NcnnJob("seed_ca", Path(given))
        assert [p.name for p in job.files] == ["m.ncnn.param", "m.ncnn.bin", "m.ncnn.json"]
        assert job.dynamic and not job.fixed_size


def test_job_refuses_int8() -> None:
    with pytest.raises(BadInputError, match="ncnn precision 'int8'"):
        NcnnJob("seed_ca", Path("m"), precision="int8")


def test_a_failure_only_away_from_the_traced_size_points_to_fixed_size() -> None:

    tol = tolerance("float32", "ncnn")
    right = compare("output", np.ones((1, 4)), np.ones((1, 4)), tol)
    wrong = compare("output", np.ones((1, 4)), np.zeros((1, 4)), tol)
    gate = GateResult("ncnn", [CaseResult((1, 3, 32, 32), 1, [right])])
    assert pinned_elsewhere(gate, SHAPE) is None
    gate.cases.append(CaseResult((2, 3, 64, 96), 1, [wrong]))
    assert "not at 64x96" in (pinned_elsewhere(gate, SHAPE) or "")
    gate.cases.append(CaseResult((1, 3, 32, 32), 2, [wrong]))
    assert pinned_elsewhere(gate, SHAPE) is None
