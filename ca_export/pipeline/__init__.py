"""The pipeline: load -> trace -> find blocks -> rewrite -> emit -> verify -> report.

``common`` holds the stages every format shares; each format has its own tail.
"""

from ca_export.pipeline.common import inspect_model
from ca_export.pipeline.onnx import OnnxJob, export_onnx

__all__ = ["OnnxJob", "export_onnx", "inspect_model"]
