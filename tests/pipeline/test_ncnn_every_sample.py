"""``ca-export ncnn`` on every sample: the size-safe default gated in ncnn at the traced
size and two others (one non-square where the model allows), and ``--fixed-size`` at its
size; a model with an op that would hold the traced size is refused with exit 2. Slow (each
conversion is a full pipeline run; needs the ncnn extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ncnn", reason='needs the ncnn extra: pip install -e ".[ncnn]"')
pytest.importorskip("pnnx", reason='needs the ncnn extra: pip install -e ".[ncnn]"')

from ca_export.errors import BadInputError
from ca_export.pipeline.ncnn import NcnnJob, export_ncnn
from ca_export.report.figures import GateFigures, NcnnFigures
from sample_models import CA_BLOCKS

pytestmark = pytest.mark.slow

SIZES = {"seed_ca": 32, "digits_ca": 32}
"""The traced size of each sample (64 where not listed: the YOLO samples need multiples
of 32)."""
MULTIPLE = {"ca_segnet": [16, 16]}
"""Samples whose size-safe model is exact at multiples of H, W only (metadata)."""


def shape_of(model: str) -> tuple[int, int, int, int]:
    size = SIZES.get(model, 64)
    return (1, 3, size, size)


@pytest.mark.parametrize("model", sorted(CA_BLOCKS))
def test_default_is_exact_at_three_sizes(model: str, tmp_path: Path) -> None:
    job = NcnnJob(model, tmp_path / model, input_shape=shape_of(model))
    report = export_ncnn(job)
    assert report.passed, report.to_dict()
    parity, structure = report.parity.figures, report.structure.figures
    assert isinstance(parity, GateFigures) and isinstance(structure, NcnnFigures)
    sizes = {tuple(case.input_shape[2:]) for case in parity.cases}
    assert len(sizes) == 3
    assert model == "seed_ca" or any(h != w for h, w in sizes)
    assert list(structure.multiple) == MULTIPLE.get(model, [1, 1])
    assert blocks_gated_in_ncnn(parity) == ([CA_BLOCKS[model]] * 3 if CA_BLOCKS[model] else [])


def blocks_gated_in_ncnn(parity: GateFigures) -> list[int]:
    """How many CA blocks the per-block gate inside ncnn judged at each size."""
    inside = parity.runtime_blocks
    return [] if inside is None else [len(case.comparisons) for case in inside.cases]


@pytest.mark.parametrize("model", sorted(CA_BLOCKS))
def test_fixed_size_is_exact_at_its_size(model: str, tmp_path: Path) -> None:
    shape = shape_of(model)
    report = export_ncnn(NcnnJob(model, tmp_path / model, input_shape=shape, dynamic=False))
    assert report.passed, report.to_dict()
    parity = report.parity.figures
    assert isinstance(parity, GateFigures)
    assert {tuple(case.input_shape) for case in parity.cases} == {shape}
    assert blocks_gated_in_ncnn(parity) == ([CA_BLOCKS[model]] if CA_BLOCKS[model] else [])


def test_an_op_holding_the_traced_size_is_refused(tmp_path: Path) -> None:
    """An expand to the map's height read by a ``cat`` (which does not broadcast)."""
    factory = tmp_path / "tiled.py"
    factory.write_text(
        "import torch\n\n\nclass Tiled(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        row = x.mean((1, 2), keepdim=True).expand(-1, -1, x.shape[2], -1)\n"
        "        return torch.cat((x, row), 1)\n\n\n"
        "def build():\n    return Tiled().eval()\n"
    )
    (tmp_path / "out").mkdir()
    job = NcnnJob(f"{factory}:build", tmp_path / "out" / "m", input_shape=(1, 3, 32, 32))
    with pytest.raises(BadInputError, match=r"aten\.expand\.default.*--fixed-size"):
        export_ncnn(job)
    assert not list((tmp_path / "out").iterdir())


def test_size_safe_input_off_the_multiple_is_refused(tmp_path: Path) -> None:
    """At 72x64 the upsamples' ratios are not whole: they stay size-driven, and are named."""
    job = NcnnJob("ca_segnet", tmp_path / "seg", input_shape=(1, 3, 72, 64))
    with pytest.raises(BadInputError, match=r"upsample_bilinear2d.*not a whole multiple"):
        export_ncnn(job)
    assert not list(tmp_path.iterdir())
