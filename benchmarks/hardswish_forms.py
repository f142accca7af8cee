"""Which written-out h_swish ONNX Runtime runs fastest below opset 14 (issue 13).

``HardSwish`` is an opset-14 op; at opsets 11-13 ``ca_export.export.opset`` writes it
out. Exports MobileNetV2-CA once at opset 18 (gated), converts it to opset 14 (one
``HardSwish`` op, the reference) and to opset 13 in two exact forms, checks that the
three give the same outputs, then times them in one run, interleaved, and prints each
one's p50 over the opset-14 file's:

- ``hardsigmoid``: ``x * HardSigmoid(x, 1/6, 1/2)`` (what ``ca-export`` writes);
- ``clip``: ``x * (Clip(x + 3, 0, 6) / 6)``, torch's own decomposition.

    python -m benchmarks.hardswish_forms --cache /tmp/hswish-bench --runs 300
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from benchmarks import harness
from ca_export.bench import BenchConfig, bench
from ca_export.export import opset
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import render_bench

MODEL = "mobilenetv2_ca"


def clip_form(node: ir.Node) -> None:
    """HardSwish 14 -> 13 as ``x * (Clip(x + 3, 0, 6) / 6)``; the node becomes the Mul."""
    graph = node.graph
    assert graph is not None
    x = node.inputs[0]

    def const(value: float, name: str) -> ir.Value:
        tensor = ir.tensor(np.array(value, np.float32), name=f"{node.name}_{name}")
        out = ir.Value(name=tensor.name, const_value=tensor)
        graph.register_initializer(out)
        return out

    add = ir.node("Add", [x, const(3.0, "three")], name=f"{node.name}_add")
    clip = ir.node(
        "Clip", [add.outputs[0], const(0.0, "zero"), const(6.0, "six")], name=f"{node.name}_clip"
    )
    div = ir.node("Div", [clip.outputs[0], const(6.0, "div6")], name=f"{node.name}_div")
    for step in (add, clip, div):
        step.outputs[0].name = step.name
    graph.insert_before(node, [add, clip, div])
    node.op_type = "Mul"
    node.resize_inputs(2)
    node.replace_input_with(1, div.outputs[0])


def variants(source: Path, folder: Path) -> dict[str, Path]:
    """The opset-14 reference and the two opset-13 forms of ``source``, written to ``folder``."""
    model = onnx.load(source)
    clip_adapter = opset.Adapter("HardSwish as Clip", clip_form, replaces=True)
    made = {
        "hardswish-op14": opset.convert(model, 14)[0],
        "hardsigmoid-op13": opset.convert(model, 13)[0],
    }
    with mock.patch.dict(opset.ADAPTERS, {("HardSwish", 14): clip_adapter}):
        made["clip-op13"] = opset.convert(model, 13)[0]
    paths = {}
    for name, converted in made.items():
        onnx.checker.check_model(converted, full_check=True)
        paths[name] = folder / f"{name}.onnx"
        onnx.save(converted, paths[name])
    return paths


def same_outputs(paths: dict[str, Path], size: int) -> float:
    """The largest difference of any variant's output from the first one's."""
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    outs = []
    for path in paths.values():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    return max(float(np.abs(o - outs[0]).max()) for o in outs)


def main() -> None:
    parser = harness.parser(__doc__, runs=200, what="the export")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        source = folder / f"{MODEL}-{args.size}-op18.onnx"
        if not source.is_file():
            print(f"exporting {MODEL} ...", file=sys.stderr, flush=True)
            shape = (1, 3, args.size, args.size)
            if not export_onnx(OnnxJob(MODEL, source, None, shape)).passed:
                raise SystemExit("the export did not pass its gates")
        paths = variants(source, folder)
        print(f"largest output difference between the forms: {same_outputs(paths, args.size):.3g}")
        config = BenchConfig(20, args.runs, 0.0, (args.threads,))
        report = bench(paths, (1, 3, args.size, args.size), config)
    print(render_bench(report, top=8))
    t = args.threads
    print(f"\n{MODEL} at {args.size}x{args.size}, {t} thread(s), {report.timings[0].runs} rounds")
    for name in paths:
        ratio = report.ratio(name, "hardswish-op14", t)
        print(f"{name:18s} p50 {report.timing(name, t).p50_ms:7.2f} ms  {ratio:.3f}x opset 14")


if __name__ == "__main__":
    main()
