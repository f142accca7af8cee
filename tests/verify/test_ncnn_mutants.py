"""The ncnn gate (fp32 arithmetic, Winograd off) fails every
mutant of one CA block and passes the correct conversion, on ``yolov5_ca`` and
``mobilenetv2_ca`` at 64x64 (``benchmarks.mutants``; needs the ncnn extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("ncnn", reason='needs the ncnn extra: pip install -e ".[ncnn]"')
pytest.importorskip("pnnx", reason='needs the ncnn extra: pip install -e ".[ncnn]"')

from benchmarks.mutants import CORRECT, MUTANTS, Bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Bench]:
    """One bench per model, made on first use."""
    made: dict[str, Bench] = {}
    folder: Path = tmp_path_factory.mktemp("ncnn_mutants")

    def get(model: str) -> Bench:
        if model not in made:
            made[model] = Bench(model, 64, folder)
        return made[model]

    return get


@pytest.mark.parametrize("model", ["yolov5_ca", "mobilenetv2_ca"])
@pytest.mark.parametrize("name", [CORRECT, *MUTANTS])
def test_ncnn_gate_passes_only_the_correct_conversion(
    benches: Callable[[str], Bench], model: str, name: str
) -> None:
    row = benches(model).gate(name, "ncnn")
    assert row.passed is (name == CORRECT), row
