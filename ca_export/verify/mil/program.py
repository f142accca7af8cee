"""Read a saved Core ML ML program back into MIL and evaluate it op by op in NumPy.

``milproto.load`` (which runs on Linux) turns the package's ``model.mlmodel`` and its
weight file back into a MIL program (a neural-network ``.mlmodel`` is read as its
layers instead, see ``network``). ``evaluate`` walks the main function's ops in
order: ``const`` values are read as stored, every other op runs its function from
``ops.OPS`` on float32 copies of its float inputs, and each output is rounded to the
dtype the program declares for it. An fp16 program therefore holds every activation
and weight in fp16 between ops, as Core ML does; within one op the sums run in fp32.

With ``fp32_arithmetic`` an fp16 program runs a second way: the same ops, every value
kept in fp32, no rounding between ops, and optionally other ``constants`` (the fp32
values its fp16 constants were rounded from; see ``verify.mil.fp32_arithmetic``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ca_export.errors import BadInputError
from ca_export.export.coreml import coremltools
from ca_export.verify.mil.network import KINDS as NETWORK_KINDS
from ca_export.verify.mil.network import NetworkProgram
from ca_export.verify.mil.ops import OPS, Unsupported


@dataclass
class MilProgram:
    """A saved ML program: its model description and its main function."""

    path: Path
    spec: Any
    function: Any
    unit = "op"

    @property
    def input_names(self) -> list[str]:
        """The function's input names, in order."""
        return list(self.function.inputs)

    @property
    def output_names(self) -> list[str]:
        """The function's output names, in order."""
        return [var.name for var in self.function.outputs]

    @property
    def compared_outputs(self) -> list[str]:
        """The outputs compared with PyTorch: all but a classifier's label."""
        return [var.name for var in self.function.outputs if _nptype(var) is not str]

    @property
    def classes(self) -> list[Any]:
        """A classifier's class labels in its score order (empty for other programs)."""
        for op in self.function.operations:
            if op.op_type == "classify":
                value = op.inputs["classes"].val
                return list(getattr(value, "ls", value))
        return []

    @property
    def dtype(self) -> str:
        """ "float16" if any op computes in fp16, else "float32"."""
        fp16 = any(
            _nptype(out) == np.float16
            for op in self.function.operations
            if op.op_type != "const"
            for out in op.outputs
        )
        return "float16" if fp16 else "float32"


def load_program(path: Path) -> MilProgram | NetworkProgram:
    """Load a saved ``.mlpackage`` back as MIL; a neural network is read as its layers."""
    ct = coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    if not path.exists():
        raise BadInputError(f"artifact {str(path)!r} does not exist")
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"{str(path)!r} is not a Core ML model: {first}") from None
    kind = spec.WhichOneof("Type")
    if kind in NETWORK_KINDS:
        return NetworkProgram(path, spec)
    if kind != "mlProgram":
        raise Unsupported(f"{kind} format")
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    try:
        program = load(spec, spec.specificationVersion, str(weights))
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"{str(path)!r}: the ML program does not load: {first}") from None
    return MilProgram(path, spec, program.functions["main"])


def uncovered(program: MilProgram | NetworkProgram) -> list[str]:
    """The program's op types (or op parameters) the evaluator does not implement, sorted."""
    if isinstance(program, NetworkProgram):
        return program.uncovered()
    missing = set()
    for op in program.function.operations:
        if op.op_type == "const":
            continue
        func = OPS.get(op.op_type)
        if func is None or op.blocks:
            missing.add(op.op_type)
            continue
        params = inspect.signature(func).parameters
        missing |= {f"{op.op_type}.{name}" for name in op.inputs if name not in params}
    return sorted(missing)


def evaluate(
    program: MilProgram,
    feeds: dict[str, np.ndarray],
    fp32_arithmetic: bool = False,
    constants: dict[str, np.ndarray] | None = None,
    every: bool = False,
) -> dict[str, np.ndarray]:
    """The program's outputs on ``feeds`` (by input name); raises ``Unsupported`` on a gap.

    ``fp32_arithmetic`` keeps values the program declares fp16 in fp32 instead, except
    decompressed weights (``constexpr_*``), which are stored values like constants;
    ``constants`` replaces the values of the ``const`` ops it names; with ``every``,
    every array value is returned by name (for localisation).
    """
    constants = constants or {}
    gaps = uncovered(program)
    if gaps:
        raise Unsupported("op " + ", ".join(gaps))

    def nptype(var: Any) -> Any:
        found = _nptype(var)
        return np.float32 if fp32_arithmetic and found == np.float16 else found

    values: dict[str, Any] = {}
    for name, var in program.function.inputs.items():
        values[name] = np.asarray(feeds[name]).astype(nptype(var))
    for op in program.function.operations:
        if op.op_type == "const":
            name = op.outputs[0].name
            values[name] = constants[name] if name in constants else op.outputs[0].val
            continue
        args = {name: _read(var, values) for name, var in op.inputs.items()}
        try:
            result = OPS[op.op_type](**args)
        except Unsupported as err:
            raise Unsupported(f"op {op.op_type} ({err})") from None
        results = result if isinstance(result, list) else [result]
        for var, value in zip(op.outputs, results, strict=True):
            kind = _nptype(var) if op.op_type.startswith("constexpr_") else nptype(var)
            values[var.name] = value if kind in (str, dict) else np.asarray(value).astype(kind)
    if every:
        return {k: v for k, v in values.items() if isinstance(v, np.ndarray)}
    return {name: values[name] for name in program.output_names}


def run_program(
    program: MilProgram | NetworkProgram,
    x: np.ndarray,
    fp32_arithmetic: bool = False,
    constants: dict[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """The compared outputs, in order, on its one input ``x``, as float32 (see ``evaluate``).

    A classifier's scores (a dict by class) become one row, in the program's class order.
    A neural network runs its layers (``network``; it always computes in fp32).
    """
    if isinstance(program, NetworkProgram):
        return program.run(x)
    outputs = evaluate(program, {program.input_names[0]: x}, fp32_arithmetic, constants)
    return [_array(outputs[name]) for name in program.compared_outputs]


def _array(value: Any) -> np.ndarray:
    """An output as float32; a dict of class scores as a (1, K) row."""
    if isinstance(value, dict):
        return np.asarray([list(value.values())], dtype=np.float32)
    return np.asarray(value).astype(np.float32)


def _read(var: Any, values: dict[str, Any]) -> Any:
    """An op input's value (a tuple of vars gives a list), fp16 widened to float32."""
    if isinstance(var, (list, tuple)):
        return [_read(v, values) for v in var]
    value = values[var.name]
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _nptype(var: Any) -> Any:
    """The NumPy type of a MIL value's element type (``str`` or ``dict`` for those values)."""
    from coremltools.converters.mil.mil import types

    if types.is_str(var.dtype):
        return str
    if types.is_dict(var.dtype):
        return dict
    return types.nptype_from_builtin(var.dtype)
