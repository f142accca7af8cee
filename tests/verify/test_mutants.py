"""Mutation suite (issue 21, item 2): every wrong variant of one CA block fails every gate,
and every correct export passes, on ``yolov5_ca`` and ``mobilenetv2_ca`` at 64x64.

The mutants and gates are ``benchmarks.mutants``'s. Each test records its row (model,
export, gate, margin, verdict); the module writes them to ``mutant_margins.json`` in
pytest's base temp folder and prints the table (visible with ``-s -n 0``).
Fast: the ONNX gate on ``yolov5_ca``'s correct export and its two subtlest mutants (a
shared conv scaled by 1.01, a BN epsilon moved) and ``ca-export verify`` on the BN one.
Slow: every other (model, export, gate), and each mutant's distance from the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest

from benchmarks.mutants import CORRECT, GATES, MUTANTS, Bench, Row, table, to_json
from ca_export.export import executorch as et

MODELS = ("yolov5_ca", "mobilenetv2_ca")
SIZE = 64
EXPORTS = (CORRECT, *MUTANTS)
CHEAP = ("onnx", "optimize")
"""Gates that only run ONNX Runtime on the shared ONNX export: on every export, fast."""
SUBTLE = (CORRECT, "bn_eps")
"""The correct export and the mutant nearest a pass (``conv1_scaled`` sits 6 times further
out, ``python -m benchmarks.mutant_margins``; it runs with ``-m slow``)."""
FAST = {
    ("yolov5_ca", "onnx"): SUBTLE,
    ("yolov5_ca", "verify"): ("bn_eps",),
}
"""The fast cases; the full-size grid is ``python -m benchmarks.mutant_margins``."""
NOISE_FACTOR = 10
"""A mutant's float64 effect must exceed PyTorch fp32's own error this many times."""


def _cases(gates: tuple[str, ...]) -> Iterator[object]:
    """(model, export, gate) for ``gates``; slow unless in ``FAST``."""
    for model in MODELS:
        for gate in gates:
            for name in EXPORTS:
                fast = name in FAST.get((model, gate), ())
                marks = [] if fast else [pytest.mark.slow]
                yield pytest.param(model, name, gate, marks=marks, id=f"{model}-{name}-{gate}")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Row]]:
    """The rows the module's tests record; written as JSON and printed as a table at the end."""
    found: list[Row] = []
    yield found
    if found:
        path = tmp_path_factory.getbasetemp() / "mutant_margins.json"
        path.write_text(to_json(found))
        print(f"\nmargins (error over bound; <= 1 passes), {SIZE}x{SIZE}, rows in {path}")
        print(table(found))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Bench]:
    """``bench(model)``: the model at ``SIZE`` with its mutants, exports made once."""
    made: dict[str, Bench] = {}

    def get(model: str) -> Bench:
        if model not in made:
            made[model] = Bench(model, SIZE, tmp_path_factory.mktemp(model))
        return made[model]

    return get


def _judge(row: Row) -> None:
    """A mutant fails with a margin above 1; the correct export passes with one of at most 1."""
    assert not math.isnan(row.margin), f"{row.gate} could not judge {row.mutant}: {row.note}"
    if row.mutant == CORRECT:
        assert row.passed and row.margin <= 1, row
    else:
        assert not row.passed and row.margin > 1, row


@pytest.mark.parametrize(
    ("model", "name"),
    [pytest.param(m, n, marks=pytest.mark.slow) for m in MODELS for n in MUTANTS],
)
def test_mutant_differs_from_the_model_far_beyond_fp32_noise(
    bench: Callable[[str], Bench], model: str, name: str
) -> None:
    """At float64 each mutant's output moves by far more than PyTorch fp32's own error, so a
    gate that passes it would pass a wrong result (not an equal one)."""
    found = bench(model)
    assert found.effect(name) > NOISE_FACTOR * found.noise()


@pytest.mark.parametrize(("model", "name", "gate"), list(_cases(CHEAP)))
def test_onnx_and_optimize_gates(
    bench: Callable[[str], Bench], rows: list[Row], model: str, name: str, gate: str
) -> None:
    row = bench(model).gate(name, gate)
    rows.append(row)
    _judge(row)


@pytest.mark.parametrize(
    ("model", "name", "gate"), list(_cases(tuple(g for g in GATES if g not in CHEAP)))
)
def test_coreml_executorch_and_verify_gates(
    bench: Callable[[str], Bench], rows: list[Row], model: str, name: str, gate: str
) -> None:
    if gate == "executorch" and not et.EXTRA.available():
        pytest.skip("the executorch extra is not installed")
    row = bench(model).gate(name, gate)
    rows.append(row)
    _judge(row)


def test_table_names_each_gate_margin_and_verdict() -> None:
    """The table has a column per gate run and a pass/fail after each margin."""
    found = [
        Row("m", CORRECT, "onnx", 0.5, True),
        Row("m", "identity", "onnx", 2e4, False),
        Row("m", "identity", "verify", 3e4, False),
    ]
    text = table(found, {("m", "identity"): 12.0})
    assert text.splitlines()[0] == "| model | export | onnx | verify | fp64 rel diff |"
    assert "| m | correct | 0.5 pass |  |  |" in text
    assert "| m | identity | 2e+04 fail | 3e+04 fail | 12 |" in text
