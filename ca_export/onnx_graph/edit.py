"""Adding nodes to an ONNX graph: unique names, int64 axes, opset-aware axes inputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ca_export.onnx_graph.index import GraphIndex

AXES_AS_INPUT = {"ReduceMean": 18, "Squeeze": 13, "Unsqueeze": 13}
"""The opset from which each op takes its axes as an input instead of an attribute."""


class Editor:
    """Appends nodes and initializers to a graph under names nothing else uses."""

    def __init__(self, index: GraphIndex) -> None:
        self.index = index
        self.graph = index.graph
        self.taken = {n.name for n in self.graph.node}
        self.taken |= {t for n in self.graph.node for t in [*n.input, *n.output]}
        self.taken |= {i.name for i in [*self.graph.input, *self.graph.initializer]}

    def fresh(self, base: str) -> str:
        """``base``, or ``base_<k>`` with the first k that is free."""
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs: object) -> onnx.NodeProto:
        """Append a node with one fresh output named after ``base``."""
        node = helper.make_node(
            op, inputs, [self.fresh(f"{base}_out")], name=self.fresh(base), **attrs
        )
        self.graph.node.append(node)
        return node

    def clone(self, node: onnx.NodeProto, env: dict[str, str], base: str) -> onnx.NodeProto:
        """Append a copy of ``node`` reading renamed inputs; map its outputs in ``env``."""
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = self.fresh(f"{base}/{node.name or node.op_type}")
        del copy.input[:]
        copy.input.extend(env.get(i, i) for i in node.input)
        del copy.output[:]
        for out in node.output:
            env[out] = self.fresh(f"{base}/{out}") if out else ""
            copy.output.append(env[out])
        self.graph.node.append(copy)
        return copy

    def initializer(self, value: np.ndarray, base: str) -> str:
        """Add a constant under a fresh name; return the name."""
        init = numpy_helper.from_array(value, self.fresh(base))
        self.graph.initializer.append(init)
        return init.name

    def axes_node(
        self, op: str, data: str, axes: list[int], base: str, **attrs: object
    ) -> onnx.NodeProto:
        """Append ReduceMean/Squeeze/Unsqueeze over ``axes`` in the form the opset wants."""
        if self.index.opset >= AXES_AS_INPUT[op]:
            axes_name = self.initializer(np.array(axes, dtype=np.int64), f"{base}_axes")
            return self.node(op, [data, axes_name], base, **attrs)
        return self.node(op, [data], base, axes=axes, **attrs)
