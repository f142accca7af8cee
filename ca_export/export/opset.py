"""Give an exported ONNX model the opset the user asked for (11 to 23), or refuse saying why.

torch 2.13's dynamo exporter builds graphs at opset 18 or later. Asked for less, it
exports at 18 and calls onnxscript's version converter, which covers opsets 18 to 25
only and falls back to ``onnx.version_converter``. That fallback runs before the
exporter's optimizer (ReduceMean axes are not constants yet, so it fails), and even on
the optimised model it has no adapter for BatchNormalization 15 -> 14 and leaves
ReduceMean 18's ``noop_with_empty_axes`` behind at 17. The exporter then logs a
warning and writes opset 18: the option is silently ignored.

So for an opset below 18 we export at 18 and convert the optimised model down here
with an onnx_ir pass (``ConvertDown``) over the nodes of the default domain, schema
step by schema step (``onnx.defs`` gives each op's versions):

- a step whose schemas have the same inputs, outputs and attributes (same defaults)
  changed only the types the op accepts: the node is kept as it is (the ONNX checker
  and ONNX Runtime then check its types);
- a step listed in ``ADAPTERS`` has an exact adapter: axes or split sizes move from an
  input to an attribute, attributes added at their neutral value are dropped, a
  ``HardSwish`` below opset 14 is written out;
- any other step is refused (``BadInputError``, exit 2), naming the op and the opset.

Opsets 18 and later come from the exporter itself (``export_opset``). Either way the
final model then goes through the pipeline's checker, structural check and exact
parity gate.

``HardSwish`` below opset 14 becomes ``x * HardSigmoid(x, alpha=1/6, beta=1/2)``,
the same function (ONNX defines HardSwish so). On ONNX Runtime at opset 13 it runs as
fast as the one op (1.001x), ``x * Clip(x + 3, 0, 6) / 6`` 1.09x slower
(``benchmarks/hardswish_forms.py``, MobileNetV2-CA 224x224, one thread).

Before (opset 14+)::

    x ── HardSwish ── y

After (opset 11-13)::

    x ─┬─ HardSigmoid(1/6, 1/2) ─┐
       └──────────────────────── Mul ── y
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.defs
import onnx_ir as ir
import onnx_ir.passes.common
import onnx_ir.traversal

from ca_export.errors import BadInputError

OPSETS = range(11, 24)
"""Default-domain opsets ``ca-export onnx --opset`` writes."""

EXPORTER_OPSET = 18
"""The lowest opset torch's dynamo exporter builds a graph at."""


class Unsupported(Exception):
    """A node that has no exact form at the target opset."""


@dataclass
class OpsetChange:
    """What converting a model to another opset did."""

    exported_at: int
    opset: int
    adapted: dict[str, int] = field(default_factory=dict)

    @property
    def converted(self) -> bool:
        """Whether the model was exported at another opset and converted."""
        return self.exported_at != self.opset

    def summary(self) -> str:
        """One line for the export summary of a converted model."""
        done = ", ".join(f"{k} {v}" for k, v in self.adapted.items()) or "no node changed"
        return f"opset {self.opset}: exported at {self.exported_at}, converted down ({done})"


def export_opset(opset: int) -> int:
    """The opset to ask the exporter for, to give ``opset`` after ``convert``."""
    return max(opset, EXPORTER_OPSET)


def model_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise BadInputError("the model imports no default-domain (ai.onnx) opset")


def convert(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, OpsetChange]:
    """``model`` at ``opset`` (a new model; the input is left as it is)."""
    if opset not in OPSETS:
        raise BadInputError(f"opset {opset} is not supported; choose {OPSETS[0]}-{OPSETS[-1]}")
    current = model_opset(model)
    change = OpsetChange(current, opset)
    if current == opset:
        return model, change
    if opset > current:
        raise BadInputError(f"the model is at opset {current}; ca-export converts down only")
    if model.functions:
        raise BadInputError(
            f"the model holds ONNX functions ({model.functions[0].name}); "
            f"they cannot be converted to opset {opset}"
        )
    step = ConvertDown(opset)  # run alone: Sequential would wrap its BadInputError
    converted = ir.passes.common.RemoveUnusedNodesPass()(step(ir.from_proto(model)).model).model
    change.adapted = dict(step.adapted.most_common())
    return ir.to_proto(converted), change


class ConvertDown(ir.passes.InPlacePass):
    """The onnx_ir pass that lowers every default-domain node (subgraphs too) to ``opset``.

    ``adapted`` counts the changes each adapter made; a node with no exact form at
    ``opset`` raises ``BadInputError`` naming it.
    """

    def __init__(self, opset: int) -> None:
        super().__init__()
        self.opset = opset
        self.adapted: Counter[str] = Counter()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Lower each node, then set the model's default-domain opset."""
        current = model.opset_imports[""]
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.domain != "":
                continue
            try:
                self.adapted.update(_lower(node, current, self.opset))
            except Unsupported as err:
                raise BadInputError(
                    f"cannot write opset {self.opset}: {node.op_type} node {node.name!r}: {err}"
                ) from None
        model.opset_imports[""] = self.opset
        model.graph.opset_imports[""] = self.opset
        return ir.passes.PassResult(model, modified=True)


def _since(op: str, opset: int) -> int | None:
    """The version of ``op``'s schema in force at ``opset`` (None if it does not exist yet)."""
    try:
        return onnx.defs.get_schema(op, max_inclusive_version=opset, domain="").since_version
    except onnx.defs.SchemaError:
        return None


def _lower(node: ir.Node, current: int, target: int) -> list[str]:
    """Rewrite ``node`` from its schema at ``current`` to one valid at ``target``.

    Returns the names of the adapters that changed it (none if only the types changed).
    """
    version = _since(node.op_type, current)
    if version is None:
        raise Unsupported(f"not an operator of opset {current}")
    floor = _since(node.op_type, target) or 0
    done: list[str] = []
    while version > floor:
        adapter = ADAPTERS.get((node.op_type, version))
        older = _since(node.op_type, version - 1)
        if adapter is not None:
            before = _state(node)
            adapter.apply(node)
            if _state(node) != before:
                done.append(adapter.name)
            if adapter.replaces:
                return done
        elif older is None:
            raise Unsupported(f"it exists from opset {version} on, and has no written-out form")
        elif not _same_signature(node.op_type, version, older):
            raise Unsupported(
                f"its definition changed at opset {version} and ca-export has no exact "
                f"conversion to opset {older}"
            )
        if older is None:
            break
        version = older
    return done


def _state(node: ir.Node) -> tuple:
    """What an adapter may change: op, inputs and attributes."""
    attrs = sorted((k, repr(a.value)) for k, a in node.attributes.items())
    return node.op_type, tuple(id(v) for v in node.inputs), tuple(attrs)


def _signature(op: str, version: int) -> tuple:
    schema = onnx.defs.get_schema(op, max_inclusive_version=version, domain="")
    params = [(p.name, p.option) for p in (*schema.inputs, *schema.outputs)]
    attrs = sorted(
        (a.name, a.type, a.required, a.default_value.SerializeToString())
        for a in schema.attributes.values()
    )
    return params, attrs


def _same_signature(op: str, version: int, older: int) -> bool:
    """Whether two schemas of ``op`` differ only in the types they accept."""
    return _signature(op, version) == _signature(op, older)


def _constant_ints(node: ir.Node, index: int) -> list[int] | None:
    """The int64 values of a constant input (None if the input is absent)."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    tensor = ir.convenience.get_const_tensor(node.inputs[index])
    if tensor is None:
        raise Unsupported(f"input {index} is computed in the graph, not a constant")
    return [int(v) for v in tensor.numpy().reshape(-1)]


def _drop_inputs_from(node: ir.Node, index: int) -> None:
    if len(node.inputs) > index:
        node.resize_inputs(index)


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def _axes_to_attribute(node: ir.Node) -> None:
    """Reduce 18 / ReduceSum 13 / Squeeze 13 / Unsqueeze 13: axes input -> attribute."""
    if _int_attr(node, "noop_with_empty_axes", 0):
        raise Unsupported("noop_with_empty_axes=1 has no form before the axes input")
    node.attributes.pop("noop_with_empty_axes", None)
    axes = _constant_ints(node, 1)
    _drop_inputs_from(node, 1)
    if axes is not None and (axes or node.op_type in ("Squeeze", "Unsqueeze")):
        node.attributes["axes"] = ir.AttrInt64s("axes", axes)


def _split_sizes(node: ir.Node) -> None:
    """Split 18 -> 13: ``num_outputs`` becomes explicit split sizes."""
    count = node.attributes.pop("num_outputs", None)
    if count is None:
        return
    axis = _int_attr(node, "axis", 0)
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    if shape is None or not isinstance(shape[axis], int):
        raise Unsupported("num_outputs over an axis of unknown size")
    n, size = count.as_int(), shape[axis]
    chunk = -(-size // n)
    sizes = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    if len(sizes) != n:
        raise Unsupported(f"{n} outputs over size {size}")
    graph = node.graph
    assert graph is not None
    value = ir.Value(name=f"{node.name}_split_sizes", const_value=ir.tensor(np.array(sizes)))
    graph.register_initializer(value)
    node.resize_inputs(2)
    node.replace_input_with(1, value)


def _split_to_attribute(node: ir.Node) -> None:
    """Split 13 -> 11: split sizes input -> attribute."""
    sizes = _constant_ints(node, 1)
    _drop_inputs_from(node, 1)
    if sizes is not None:
        node.attributes["split"] = ir.AttrInt64s("split", sizes)


def _drop(**neutral: Callable[[object], bool]) -> Callable[[ir.Node], None]:
    """Drop attributes a newer schema added, where each holds a value the older one means."""

    def drop(node: ir.Node) -> None:
        for name, is_neutral in neutral.items():
            attr = node.attributes.get(name)
            if attr is None:
                continue
            value = attr.value
            if not is_neutral(value):
                raise Unsupported(f"{name}={value!r} has no form at the older opset")
            node.attributes.pop(name)

    return drop


def _reshape_allowzero(node: ir.Node) -> None:
    """Reshape 14 -> 13: ``allowzero`` matters only where the shape holds a 0.

    A constant shape is read; a shape computed from the input's own dimensions (what
    torch emits for a dynamic flatten) holds a 0 only for an empty tensor.
    """
    attr = node.attributes.pop("allowzero", None)
    if attr is None or attr.as_int() == 0:
        return
    tensor = ir.convenience.get_const_tensor(node.inputs[1]) if node.inputs[1] else None
    if tensor is not None and 0 in tensor.numpy():
        raise Unsupported("allowzero=1 with a 0 in the shape has no form before opset 14")


def _refuse_value(name: str, refused: str) -> Callable[[ir.Node], None]:
    """A newer schema added the value ``refused`` to the attribute ``name``."""

    def check(node: ir.Node) -> None:
        attr = node.attributes.get(name)
        if attr is not None and attr.value == refused:
            raise Unsupported(f"{name}={refused!r} has no form at the older opset")

    return check


def _no_input(index: int, name: str) -> Callable[[ir.Node], None]:
    """A newer schema added an optional input; it must be absent."""

    def check(node: ir.Node) -> None:
        if index < len(node.inputs) and node.inputs[index] is not None:
            raise Unsupported(f"the {name} input has no form at the older opset")
        _drop_inputs_from(node, index)

    return check


def _resize_inputs_present(node: ir.Node) -> None:
    """Resize 13 -> 11: ``roi`` and ``scales`` are required inputs (empty when unused)."""
    graph = node.graph
    assert graph is not None
    for index, name in ((1, "roi"), (2, "scales")):
        if index < len(node.inputs) and node.inputs[index] is not None:
            continue
        if len(node.inputs) <= index:
            node.resize_inputs(index + 1)
        empty = ir.tensor(np.zeros(0, np.float32), name=f"{node.name}_{name}")
        value = ir.Value(name=empty.name, const_value=empty)
        graph.register_initializer(value)
        node.replace_input_with(index, value)


def _last_axis(node: ir.Node) -> None:
    """Softmax-like 13 -> 11: the same only over the last axis (11 flattens to 2-D there)."""
    axis = _int_attr(node, "axis", -1)
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    if axis != -1 and (shape is None or axis != len(shape) - 1):
        raise Unsupported(f"axis={axis} is not the last axis")
    node.attributes["axis"] = ir.AttrInt64("axis", -1)


def _written_out_hardswish(node: ir.Node) -> None:
    """HardSwish 14 -> 13: ``x * HardSigmoid(x, alpha=1/6, beta=1/2)``.

    The node itself becomes the Mul, so its name, output and scope stay.
    """
    graph = node.graph
    assert graph is not None
    x = node.inputs[0]
    gate = ir.node(
        "HardSigmoid",
        [x],
        attributes={"alpha": 1.0 / 6.0, "beta": 0.5},
        name=f"{node.name}_hardsigmoid",
        metadata_props=dict(node.metadata_props),
    )
    gate.outputs[0].name = f"{node.outputs[0].name}_hardsigmoid"
    graph.insert_before(node, gate)
    node.op_type = "Mul"
    node.resize_inputs(2)
    node.replace_input_with(1, gate.outputs[0])


@dataclass(frozen=True)
class Adapter:
    """An exact conversion of one op from one schema version to the one before."""

    name: str
    apply: Callable[[ir.Node], None]
    replaces: bool = False


REDUCE_18 = (
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)

ADAPTERS: dict[tuple[str, int], Adapter] = {
    **{(op, 18): Adapter(f"{op} axes to attribute", _axes_to_attribute) for op in REDUCE_18},
    ("ReduceSum", 13): Adapter("ReduceSum axes to attribute", _axes_to_attribute),
    ("Squeeze", 13): Adapter("Squeeze axes to attribute", _axes_to_attribute),
    ("Unsqueeze", 13): Adapter("Unsqueeze axes to attribute", _axes_to_attribute),
    ("Split", 18): Adapter("Split num_outputs to sizes", _split_sizes),
    ("Split", 13): Adapter("Split sizes to attribute", _split_to_attribute),
    ("HardSwish", 14): Adapter("HardSwish written out", _written_out_hardswish, replaces=True),
    ("BatchNormalization", 14): Adapter(
        "BatchNormalization training_mode dropped", _drop(training_mode=lambda v: v == 0)
    ),
    ("Reshape", 14): Adapter("Reshape allowzero dropped", _reshape_allowzero),
    ("AveragePool", 19): Adapter(
        "AveragePool dilations dropped", _drop(dilations=lambda v: set(v) <= {1})
    ),
    ("Shape", 15): Adapter("Shape start dropped", _drop(start=lambda v: v == 0)),
    ("Cast", 19): Adapter("Cast saturate dropped", _drop(saturate=lambda v: True)),
    ("Resize", 19): Adapter(
        "Resize mode checked",
        _refuse_value("coordinate_transformation_mode", "half_pixel_symmetric"),
    ),
    ("Resize", 18): Adapter(
        "Resize new attributes dropped",
        _drop(
            antialias=lambda v: v == 0,
            keep_aspect_ratio_policy=lambda v: v == "stretch",
            axes=lambda v: False,
        ),
    ),
    ("Resize", 13): Adapter("Resize roi/scales inputs added", _resize_inputs_present),
    ("Pad", 19): Adapter("Pad mode checked", _refuse_value("mode", "wrap")),
    ("Pad", 18): Adapter("Pad axes input checked", _no_input(3, "axes")),
    **{(op, 13): Adapter(f"{op} axis", _last_axis) for op in ("Softmax", "LogSoftmax", "Hardmax")},
}
"""Exact adapters keyed by (op, the schema version being left for the one before it)."""
