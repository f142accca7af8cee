"""The pipeline: load -> trace -> find -> rewrite -> emit -> lower precision -> gate ->
write -> report.

``common`` holds the stages every target shares (each takes one typed input and returns
one typed result) and ``ModelJob``, the base of every target's job; each target has its
own module (docs/design.md, "Adding a target").
"""

from ca_export.pipeline.common import inspect_model
from ca_export.pipeline.onnx import OnnxJob, export_onnx

__all__ = ["OnnxJob", "export_onnx", "inspect_model"]
