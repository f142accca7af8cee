"""CA blocks in ONNX files: the matcher, one exact rewrite per file, and the passes.

``normalize`` folds constants first (onnxscript's folder); ``pattern`` finds blocks
(and says why a pooled concat is not one); ``rewrite`` runs ``pool_to_reduce``,
``distribute_stem`` and ``drop_expand`` on each; ``dynamic`` makes H/W dynamic where
the rest of the graph allows.
"""

from ca_export.onnx_graph.dynamic import DynamicResult, make_dynamic
from ca_export.onnx_graph.index import GraphIndex
from ca_export.onnx_graph.normalize import NormalizeResult, normalize
from ca_export.onnx_graph.pattern import OnnxBlock, OnnxRejection, find
from ca_export.onnx_graph.rewrite import RewriteResult, rewrite_model

__all__ = [
    "DynamicResult",
    "GraphIndex",
    "NormalizeResult",
    "OnnxBlock",
    "OnnxRejection",
    "RewriteResult",
    "find",
    "make_dynamic",
    "normalize",
    "rewrite_model",
]
