"""Golden before/after cases of the rewrite on ONNX graphs, in the style of black's test data.

Each ``tests/data/cases/*.onnxtxt`` holds a graph in ONNX's text syntax, then ``# after``
and the graph the form named in the header (``# form:``, default ``onnx``) must give (a
case whose block must not match gives its input again, and names the rejection). Weights
are graph inputs in the file, so it stays readable; the test turns them into seeded
initializers before rewriting and back after. Every case also checks that ONNX Runtime
computes the same with both graphs, and that a second rewrite changes nothing.
``CA_EXPORT_UPDATE_CASES=1`` writes the ``# after`` sections from the current rewrite, for
review in the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx.printer
import pytest
from onnx import numpy_helper

from ca_export.pipeline.optimize import file_gate, input_shapes
from ca_export.rewrites import rewrite_model

CASES = sorted((Path(__file__).parents[1] / "data" / "cases").glob("*.onnxtxt"))
AFTER = "# after\n"


def _parts(path: Path) -> tuple[dict[str, str], str, str]:
    """The header entries (``# key: value``), the input text and the expected text."""
    before, after = path.read_text().split(AFTER)
    header = {}
    for line in before.splitlines():
        if line.startswith("# ") and ": " in line:
            key, value = line[2:].split(": ", 1)
            header[key] = value
    body = "\n".join(line for line in before.splitlines() if not line.startswith("#"))
    return header, body, after


def _with_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every graph input but the first becomes a seeded initializer."""
    rng = np.random.default_rng(0)
    weights = list(model.graph.input)[1:]
    for info in weights:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        value = (rng.standard_normal(dims) * 0.5).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(value, info.name))
    return model


def _printed(model: onnx.ModelProto, weights: set[str]) -> str:
    """The model in text syntax with its original weights shown as graph inputs again."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [i for i in copy.graph.initializer if i.name not in weights]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return onnx.printer.to_text(copy) + "\n"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case(path: Path) -> None:
    header, body, expected = _parts(path)
    source = _with_weights(onnx.parser.parse_model(body))
    weights = {i.name for i in source.graph.initializer}
    static, form = header["static"] == "true", header.get("form", "onnx")
    result = rewrite_model(source, static, form)
    got = _printed(result.model, weights)
    if os.environ.get("CA_EXPORT_UPDATE_CASES"):
        text = path.read_text()
        path.write_text(text[: text.index(AFTER) + len(AFTER)] + got)
        expected = got
    assert got == expected
    if "rejected" in header:
        assert result.blocks == []
        assert [header["rejected"] in r.reason for r in result.rejections] == [True]
    else:
        assert len(result.blocks) == 1
        onnx.checker.check_model(result.model, full_check=True)
        assert file_gate(source, result.model, input_shapes(source)).passed
    again = rewrite_model(result.model, static, form)
    assert _printed(again.model, weights) == got
