"""ONNX graph plumbing: an index of producers, consumers, shapes and constants; adding
nodes; folding constants first (``normalize``, onnxscript's folder); making H/W dynamic
(``dynamic``). The CA block and its rewrites live in ``patterns`` and ``rewrites``, read
through ``patterns.onnx_proto.OnnxView``.
"""

from ca_export.onnx_graph.dynamic import DynamicResult, make_dynamic
from ca_export.onnx_graph.index import GraphIndex
from ca_export.onnx_graph.normalize import NormalizeResult, normalize

__all__ = ["DynamicResult", "GraphIndex", "NormalizeResult", "make_dynamic", "normalize"]
