"""Imports run only downward: cli -> pipeline -> report/verify/export -> rewrites -> patterns
-> graph plumbing (the other modules of ``ca_export``). Rewrites reach a graph only through
``GraphView``: no pass file imports an adapter."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "cli": 5,
    "ca_export.pipeline": 4,
    "ca_export.report": 3,
    "ca_export.verify": 3,
    "ca_export.export": 3,
    "ca_export.bench": 3,
    "ca_export.rewrites": 2,
    "ca_export.patterns": 1,
}
"""Each package's layer; every other module of ``ca_export`` is graph plumbing (layer 0)."""
ADAPTERS = ("ca_export.patterns.aten", "ca_export.patterns.onnx_proto")


def layer(module: str) -> int:
    """The layer of a dotted module name."""
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return 0


def module_of(path: Path) -> str:
    """The dotted name of a source file."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every ``ca_export`` or ``cli`` module a file imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        yield from (n for n in names if n.split(".")[0] in ("ca_export", "cli"))


def sources() -> list[Path]:
    return sorted([*ROOT.glob("ca_export/**/*.py"), *ROOT.glob("cli/**/*.py")])


def upward(path: Path, module: str | None = None) -> list[str]:
    """The imports of ``path`` (module ``module``, by default its own name) that reach a
    higher layer than its own."""
    own = layer(module or module_of(path))
    return [name for name in imports(path) if layer(name) > own]


def test_imports_run_only_downward() -> None:
    found = {module_of(p): upward(p) for p in sources()}
    assert {m: names for m, names in found.items() if names} == {}


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import ca_export.fx\n\ndef f():\n    from ca_export.pipeline import common\n")
    assert upward(bad, "ca_export.patterns.bad") == ["ca_export.pipeline"]
    assert upward(bad, "cli.bad") == []


def test_passes_see_graphs_only_through_graphview() -> None:
    passes = [p for p in (ROOT / "ca_export" / "rewrites").glob("*.py") if p.stem != "__init__"]
    found = {p.stem: [n for n in imports(p) if n in ADAPTERS] for p in passes}
    assert {name: names for name, names in found.items() if names} == {}
