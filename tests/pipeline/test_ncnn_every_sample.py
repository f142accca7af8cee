"""``ca-export ncnn`` on every sample: the size-safe default gated in ncnn at the traced
size and two others (one non-square where the model allows), or refused with exit 2 where
an op would hold the traced size (``yolov5_ca``'s expanded anchor grid); and ``--fixed-size`` at
its size. Slow (each conversion is a full pipeline run; needs the ncnn extra)."""

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
PINNED = {"yolov5_ca": "aten.expand"}
"""Samples whose size-safe conversion exits 2, and an op the refusal names."""
MULTIPLE = {"ca_segnet": [16, 16]}
"""Samples whose size-safe model is exact at multiples of H, W only (metadata)."""


def shape_of(model: str) -> tuple[int, int, int, int]:
    size = SIZES.get(model, 64)
    return (1, 3, size, size)


@pytest.mark.parametrize("model", sorted(CA_BLOCKS))
def test_default_is_exact_at_three_sizes_or_refused(model: str, tmp_path: Path) -> None:
    job = NcnnJob(model, tmp_path / model, input_shape=shape_of(model))
    if model in PINNED:
        with pytest.raises(BadInputError, match=rf"{PINNED[model]}.*--fixed-size"):
            export_ncnn(job)
        assert not list(tmp_path.iterdir())
        return
    report = export_ncnn(job)
    assert report.passed, report.to_dict()
    parity, structure = report.parity.figures, report.structure.figures
    assert isinstance(parity, GateFigures) and isinstance(structure, NcnnFigures)
    sizes = {tuple(case.input_shape[2:]) for case in parity.cases}
    assert len(sizes) == 3
    assert model == "seed_ca" or any(h != w for h, w in sizes)
    assert list(structure.multiple) == MULTIPLE.get(model, [1, 1])


@pytest.mark.parametrize("model", sorted(CA_BLOCKS))
def test_fixed_size_is_exact_at_its_size(model: str, tmp_path: Path) -> None:
    shape = shape_of(model)
    report = export_ncnn(NcnnJob(model, tmp_path / model, input_shape=shape, dynamic=False))
    assert report.passed, report.to_dict()
    parity = report.parity.figures
    assert isinstance(parity, GateFigures)
    assert {tuple(case.input_shape) for case in parity.cases} == {shape}


def test_size_safe_input_off_the_multiple_is_refused(tmp_path: Path) -> None:
    """At 72x64 the upsamples' ratios are not whole: they stay size-driven, and are named."""
    job = NcnnJob("ca_segnet", tmp_path / "seg", input_shape=(1, 3, 72, 64))
    with pytest.raises(BadInputError, match=r"upsample_bilinear2d.*not a whole multiple"):
        export_ncnn(job)
    assert not list(tmp_path.iterdir())
