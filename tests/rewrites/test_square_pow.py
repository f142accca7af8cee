"""``square_pow``: a power by 2 becomes a multiply (bit-identical); other exponents stay."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from ca_export.patterns import OnnxView
from ca_export.rewrites import square_pows
from ca_export.rewrites.square_pow import ATEN_ONLY, square_pow
from ca_export.tracing import trace

SHAPE = (1, 3, 8, 8)


class Boxes(nn.Module):
    """YOLOv5's box sizes: ``(wh * 2) ** exponent``, times an anchor constant."""

    def __init__(self, exponent: float) -> None:
        super().__init__()
        self.exponent = exponent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.sigmoid() * 2) ** self.exponent * 3.5


def _targets(program: torch.export.ExportedProgram) -> list[str]:
    return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]


def test_square_becomes_a_multiply_of_the_base_by_itself_bit_for_bit() -> None:
    model = Boxes(2).eval()
    program = trace(model, SHAPE, dynamic=False).program
    result = square_pows(program)
    assert list(result.applied.values()) == ["x ** 2 becomes x * x (bit-identical)"]
    assert not any("pow" in t for t in _targets(program))
    squares = [n for n in program.graph.nodes if len(n.args) == 2 and n.args[0] is n.args[1]]
    assert [str(n.target) for n in squares] == ["aten.mul.Tensor"]
    x = torch.randn(SHAPE) * 10
    with torch.no_grad():
        (got,) = program.module()(x)
        assert torch.equal(got, model(x))


def test_other_exponents_are_left_alone_with_the_reason() -> None:
    for exponent, reason in ((3, "exponent 3 is not 2"), (2.5, "exponent 2.5 is not 2")):
        program = trace(Boxes(exponent).eval(), SHAPE, dynamic=False).program
        result = square_pows(program)
        assert result.applied == {} and list(result.skipped.values()) == [reason]
        assert "aten.pow.Tensor_Scalar" in _targets(program)


def test_an_onnx_graph_is_left_alone() -> None:
    graph = onnx.helper.make_graph([], "empty", [], [])
    result = square_pow(OnnxView(onnx.helper.make_model(graph)), static=True)
    assert result.skipped == {"<graph>": ATEN_ONLY}
