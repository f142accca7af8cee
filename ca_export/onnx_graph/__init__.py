"""ONNX graph plumbing on onnx_ir: shapes and constants onnx_ir does not infer
(``facts``), which nodes belong to a block (``owners``), folding constants first
(``normalize``, onnxscript's folder) and making H/W dynamic (``dynamic``). The CA block
and its rewrites live in ``patterns`` and ``rewrites``, read through
``patterns.onnx_proto.OnnxView``.
"""

from ca_export.onnx_graph.dynamic import DynamicResult, make_dynamic
from ca_export.onnx_graph.facts import GraphFacts
from ca_export.onnx_graph.normalize import NormalizeResult, normalize

__all__ = ["DynamicResult", "GraphFacts", "NormalizeResult", "make_dynamic", "normalize"]
