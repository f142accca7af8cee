"""``--keep-fp32 auto``: the fewest modules kept in fp32 that bring int8 within bounds.

After NNCF's accuracy-control mode (``quantize_with_accuracy_control``): quantize
everything and judge it; if it fails, measure each candidate module's sensitivity once,
then keep candidates in fp32 in order of sensitivity, most sensitive first, re-quantizing
and judging after each, until the result passes. A module's sensitivity is the figure of
the model with only that module in int8 (every other candidate fp32): what its own
rounding costs. NNCF ranks by reverting one layer at a time in the all-int8 model instead;
on ``mobilenetv2_ca`` (calibrated-random, 224x224, seeded calibration) that ranking is
noise (min cosine 0.875 to 0.901 around 0.898 for all-int8, the stem ranked last) and its
greedy order kept all 21 candidates. Keeping every candidate but one is the last step
tried: a model that passes only fully fp32 is not an int8 model, and the search fails.

The judge is the one the final gate applies: the lossy agreement gate on the gate's
inputs, and, with a labelled set (``--eval-data``) and a classifier output, the accuracy
drop within ``--max-accuracy-drop``. A candidate's figure is its accuracy drop where
there is one, else the smallest cosine of its outputs against the fp32 reference.

Candidates are the model's top-level modules, each top-level container with more than
``SPLIT`` children split into its children (``features.0`` ... ``features.17`` of a
MobileNetV2), as the exporter's module scopes name them. NNCF itself is not used: it
quantizes through its own OpenVINO-oriented graph, not ONNX Runtime's QDQ quantizer that
``--precision int8`` ships.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from ca_export.export.onnx import scopes
from ca_export.report.figures import KeepAuto, SearchStep, Sensitivity

SPLIT = 3
"""A top-level module with more children than this is split into its children."""


@dataclass(frozen=True)
class Score:
    """One quantized model's verdict and the figure candidates are ranked by (higher is
    better), with a line saying what was measured."""

    passed: bool
    value: float
    text: str


Judge = Callable[[onnx.ModelProto], Score]
Quantize = Callable[[Sequence[str]], onnx.ModelProto]


def candidates(model: onnx.ModelProto) -> list[str]:
    """The modules to try keeping in fp32, in graph order."""
    children: dict[str, list[str]] = {}
    for node in model.graph.node:
        found = scopes(node)
        if len(found) < 3:
            continue
        top = found[1]
        child = found[2] if len(found) > 3 and found[2].startswith(top + ".") else None
        names = children.setdefault(top, [])
        if child is not None and child not in names:
            names.append(child)
    result: list[str] = []
    for top, names in children.items():
        result += names if len(names) > SPLIT else [top]
    return result


def search(model: onnx.ModelProto, quantize: Quantize, judge: Judge) -> KeepAuto:
    """Find the modules to keep in fp32 (see the module docstring)."""
    first = judge(quantize([]))
    if first.passed:
        return KeepAuto(first.text, passed=True)
    modules = candidates(model)
    sensitivity = []
    for module in modules:
        score = judge(quantize([m for m in modules if m != module]))
        sensitivity.append(Sensitivity(module, score.value, score.passed, score.text))
    sensitivity.sort(key=lambda s: s.value)
    kept: list[str] = []
    steps = []
    passed = False
    for entry in sensitivity[:-1]:
        kept.append(entry.module)
        score = judge(quantize(kept))
        steps.append(SearchStep(tuple(kept), score.text))
        if score.passed:
            passed = True
            break
    return KeepAuto(first.text, tuple(sensitivity), tuple(steps), tuple(kept), passed)
