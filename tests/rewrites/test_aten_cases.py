"""Golden before/after cases of the rewrite on ATen graphs (``torch.export``), the twin of
``test_cases`` for the adapter every exporter uses.

Each ``tests/data/aten_cases/*.atentxt`` holds a header (``# form:``, default ``onnx``;
``# shape:``; ``# dynamic: true`` traces bounded H/W and rewrites for any size; ``# applies:``
the passes that must change the graph, or ``# rejected:`` the reason a look-alike is not a
block), then a ``Block`` module in Python, then ``# after`` and the rewritten graph printed
one node a line with its output shape. A look-alike gives its trace unchanged. Every case
also checks that the rewritten program computes what the module does (the table's
PyTorch row) and that a second rewrite changes nothing; together the cases apply every
pass. ``CA_EXPORT_UPDATE_CASES=1`` writes the ``# after`` sections from the current
rewrite, for review in the diff.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ca_zoo import seeded_input
from conftest import assert_within
from torch import fx, nn
from torch.export import ExportedProgram

from ca_export.rewrites import PASSES, ProgramRewrite, rewrite
from ca_export.tracing import trace

CASES = sorted((Path(__file__).parents[1] / "data" / "aten_cases").glob("*.atentxt"))
FAST = {"official", "twin_channel_concat"}
"""The cases in the fast suite (a trace each is about a second); the rest run with ``-m slow``,
and every pass they cover is applied in the fast suite by the zoo tests."""
AFTER = "# after\n"


def _parts(path: Path) -> tuple[dict[str, str], str, str]:
    """The header entries (``# key: value`` lines before the code), the code, the expected
    text."""
    before, after = path.read_text().split(AFTER)
    header: dict[str, str] = {}
    lines = before.splitlines()
    while lines and lines[0].startswith("#"):
        line = lines.pop(0)
        if ": " in line:
            key, value = line[2:].split(": ", 1)
            header[key] = value
    return header, "\n".join(lines), after


def _arg(value: object) -> str:
    if isinstance(value, fx.Node):
        return value.name
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_arg(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _shape(node: fx.Node) -> str:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return "x".join(str(d) for d in val.shape)
    if isinstance(val, (list, tuple)):
        return ", ".join("x".join(str(d) for d in v.shape) for v in val if hasattr(v, "shape"))
    return ""


def _printed(program: ExportedProgram) -> str:
    """One line per op: ``name = target(args)  # output shape``; weights and the input by
    name, the output last."""
    lines = []
    for node in program.graph.nodes:
        if node.op == "call_function":
            target = getattr(node.target, "__name__", str(node.target))
            if isinstance(node.target, torch._ops.OpOverload):
                target = str(node.target)
            args = ", ".join(
                [_arg(a) for a in node.args] + [f"{k}={_arg(v)}" for k, v in node.kwargs.items()]
            )
            lines.append(f"{node.name} = {target}({args})  # {_shape(node)}")
        elif node.op == "output":
            lines.append(f"return {_arg(node.args[0])}")
    return "\n".join(lines) + "\n"


@cache
def _case(path: Path) -> tuple[dict[str, str], nn.Module, ExportedProgram, ProgramRewrite]:
    """The case's module (seeded), its trace and its rewrite, made once."""
    header, code, _ = _parts(path)
    namespace: dict[str, object] = {"torch": torch, "nn": nn, "F": F}
    exec(compile(code, str(path), "exec"), namespace)
    torch.manual_seed(0)
    module = namespace["Block"]().eval()  # type: ignore[operator]
    shape = tuple(int(d) for d in header["shape"].split(","))
    dynamic = header.get("dynamic") == "true"
    program = trace(module, shape, dynamic, bounded=dynamic).program
    return header, module, program, rewrite(program, not dynamic, header.get("form", "onnx"))


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow) for p in CASES],
)
def test_aten_case(path: Path) -> None:
    header, module, program, result = _case(path)
    got = _printed(result.program)
    if os.environ.get("CA_EXPORT_UPDATE_CASES"):
        text = path.read_text()
        path.write_text(text[: text.index(AFTER) + len(AFTER)] + got)
    assert got == _parts(path)[2]
    applied = {p.name for p in result.passes if p.modified}
    if "rejected" in header:
        assert result.blocks == [] and applied == set()
        assert [header["rejected"] in r.reason for r in result.rejections] == [True]
        assert got == _printed(program)
    else:
        assert len(result.blocks) == 1
        assert applied == {p.strip() for p in header["applies"].split(",")}
    x = seeded_input(tuple(int(d) for d in header["shape"].split(",")), 1)
    with torch.no_grad():
        assert_within(module(x), result.program.module()(x))
    again = rewrite(result.program, header.get("dynamic") != "true", header.get("form", "onnx"))
    assert not again.modified and _printed(again.program) == got


def test_every_pass_has_an_aten_case() -> None:
    applied = set()
    for path in CASES:
        applied |= {p.strip() for p in _parts(path)[0].get("applies", "").split(",") if p}
    assert applied == set(PASSES)
