"""Size-safe strip means for ``ca-export ncnn``'s default form, per block (issue 24).

The default (dynamic-trace) ``ncnn`` form runs ``stem_before_pool`` in every CA block: the
stem's 1x1 conv on ``x`` at full size, then two ``Reduction`` means on its ``mip``
channels. This script converts MobileNetV2-CA with other exact, size-safe strip means and
times them with the no-CA net and the default in one interleaved run (one thread, fp32,
``ca_export.bench``), and runs each at the traced size and two others, one non-square
(error: max abs error over max |reference|, as ``benchmarks.ncnn_forms``), and counts the
layers ``export.ncnn.baked_sizes`` finds. Variants:

- ``stem_before_pool`` in no block, or only where ``mip`` is at most 8, 12 or 18 (the
  other blocks take their ``Reduction`` means on ``x``'s ``C`` channels);
- ``dynamic means``: each ``Reduction`` mean on ``x`` (the blocks without
  ``stem_before_pool``) as a depthwise convolution whose weights the graph makes at run time
  (ncnn ``ConvolutionDepthWise`` with ``19=1``, kernel ``1 x W`` or ``H x 1`` read from the
  weight blob): ``softmax(0 * x[:, :, :1, :])`` along W is ``1/W`` at every size. The
  layers are those pnnx writes for ``F.conv2d(x, w, groups=C)`` with such a ``w`` (``Crop``,
  ``BinaryOp``, ``Softmax``, a ``Reshape`` with size expressions), edited into the param
  file; in every block, or in the blocks of at most 144 channels with ``stem_before_pool``
  in the rest;
- ``adaptive mip pools``: the default's ``Reduction`` means on the ``mip`` channels as
  adaptive average ``Pooling`` (``benchmarks.ncnn_layers.adaptive_pools``).

    python -m benchmarks.ncnn_strips --cache /tmp/ncnn-forms --runs 300 --clock thread

``--blocks`` times each CA block's gates instead (strips, stem and gate convs, as
``benchmarks.ncnn_blocks`` does: the block fed its own input through the extractor) in the
default, with ``stem_before_pool`` nowhere and with dynamic means in every block, in one
interleaved run.

Ratios are the result; milliseconds depend on the machine and its load.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.ncnn_blocks import REPEAT, Job, blocks, held_mat
from benchmarks.ncnn_forms import convert, errors
from benchmarks.ncnn_layers import adaptive_pools
from ca_export.bench import CLOCKS, bench, time_interleaved
from ca_export.export import ncnn
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.patterns.aten import AtenView
from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.report.results import BenchConfig
from ca_export.rewrites import passes_for
from ca_export.rewrites.passes import Change, Pass, Skip, run
from ca_export.tracing import example_input, trace
from ca_export.verify.ncnn_runtime import NcnnRunner

BASELINE, DEFAULT = "no-CA", "ncnn (default, dynamic)"
"""``benchmarks.ncnn_forms``'s names of the no-CA net and the default form."""
Rule = Callable[[CABlock[Any, Any]], bool]


@dataclass(frozen=True)
class Variant:
    """Which blocks run ``stem_before_pool`` (None: the default form's file, unchanged),
    and an edit of the converted param file."""

    stem_where: Rule | None
    edit: Callable[[str], str] | None = None


def dynamic_means(text: str) -> str:
    """Each ``Reduction`` mean read by a ``Convolution`` (a strip mean of ``x``, not of the
    stem's output) as a dynamic-weight depthwise convolution of ``1/W`` (``1/H``)."""
    lines = text.splitlines()
    layers = ncnn.parse_param(text)
    reader = {blob: layer for layer in layers for blob in layer.inputs}
    out, added = [], 0
    for line, layer in zip(lines[2:], layers, strict=True):
        conv = reader.get(layer.outputs[0]) if layer.type == "Reduction" else None
        if conv is None or conv.type != "Convolution":
            out.append(line)
            continue
        c = int(conv.params["6"]) // int(conv.params["0"])
        if layer.params["-23303"] == "1,2":  # over W: weights [C, 1, 1, W]
            crop, axis, shape, kernel = "-23311=1,1", 2, f'"0w,1,1,{c}"', "1=-1 11=1"
        else:  # over H: weights [C, 1, H, 1]
            crop, axis, shape, kernel = "-23311=1,2", 1, f'"1,0h,1,{c}"', "1=1 11=-1"
        n = layer.name
        out += [
            f"Split {n}_split 1 2 {layer.inputs[0]} {n}_x {n}_x2",
            f"Crop {n}_crop 1 1 {n}_x2 {n}_row -23310=1,1 {crop} -23309=1,0",
            f"BinaryOp {n}_zero 1 1 {n}_row {n}_zeros 0=2 1=1 2=0.0",
            f"Softmax {n}_softmax 1 1 {n}_zeros {n}_inv 0={axis} 1=1",
            f"Reshape {n}_weights 1 1 {n}_inv {n}_w 6={shape}",
            f"ConvolutionDepthWise {n} 2 1 {n}_x {n}_w {layer.outputs[0]} 0={c} {kernel} "
            f"12=1 13=1 14=0 19=1 2=1 3=1 4=0 5=0 6=-{c} 7={c}",
        ]
        added += 5
    count, blobs = map(int, lines[1].split())
    return "\n".join([lines[0], f"{count + added} {blobs + added}", *out]) + "\n"


VARIANTS: dict[str, Variant] = {
    "stem_before_pool nowhere": Variant(lambda b: False),
    "stem_before_pool where mip <= 8": Variant(lambda b: b.mip <= 8),
    "stem_before_pool where mip <= 12": Variant(lambda b: b.mip <= 12),
    "stem_before_pool where mip <= 18": Variant(lambda b: b.mip <= 18),
    "dynamic means, every block": Variant(lambda b: False, dynamic_means),
    "dynamic means where C <= 144": Variant(lambda b: b.channels > 144, dynamic_means),
    "adaptive mip pools": Variant(None, adaptive_pools),
}


def where(rule: Rule, p: Pass) -> Pass:
    """``p`` run only on the blocks ``rule`` holds for."""

    def ruled(
        view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
    ) -> Change[OpT, ValueT]:
        if not rule(block):
            raise Skip("not chosen for this variant")
        return p.rewrite(view, block, static)

    return Pass(p.name, ruled, p.summary)


def converted(name: str, folder: Path, size: int) -> Path:
    """The variant's param file in ``folder`` (reused when there)."""
    variant = VARIANTS[name]
    stem = folder / f"strips-{'-'.join(name.replace('<=', 'le').replace(',', '').split())}"
    param, weights = ncnn.files_of(stem)
    if param.is_file() and weights.is_file():
        return param
    if variant.stem_where is None:
        source = convert(DEFAULT, folder, size)
        text, data = source.read_text(), ncnn.files_of(ncnn.stem_of(source))[1].read_bytes()
    else:
        print(f"converting {name} ...", file=sys.stderr, flush=True)
        shape = (1, 3, size, size)
        program = trace(load_model("mobilenetv2_ca").module, shape, dynamic=True).program
        view = AtenView(program.graph)
        rule = variant.stem_where
        passes = [where(rule, p) if p.name == "stem_before_pool" else p for p in passes_for("ncnn")]
        run(view, find(view)[0], passes, static=False)
        view.finish()
        done = ncnn.convert(program.module(), example_input(shape))
        text, data = done.param, done.weights
    param.write_text(variant.edit(text) if variant.edit else text)
    weights.write_bytes(data)
    return param


BLOCK_FORMS = {
    "default": (DEFAULT, DEFAULT),
    "nowhere": ("stem_before_pool nowhere", "stem_before_pool nowhere"),
    "dynamic": ("dynamic means, every block", "stem_before_pool nowhere"),
}
"""``--blocks``: short name, the variant timed, the variant whose file has its block
structure (the dynamic means keep the names of the ``Reduction`` outputs they replace)."""


def block_gates(params: dict[str, Path], size: int, runs: int, clock: str) -> None:
    """Print each block's gates in us per form (``--blocks``)."""
    x_in = example_input((1, 3, size, size)).numpy()
    sessions: dict[str, Any] = {}
    shapes: list[str] = []
    for short, (name, structure) in BLOCK_FORMS.items():
        param = params[name]
        runner = NcnnRunner(param, ncnn.files_of(ncnn.stem_of(param))[1], winograd=True)
        for k, block in enumerate(blocks(ncnn.parse_param(params[structure].read_text()))):
            extractor = runner.net.create_extractor()
            extractor.input("in0", held_mat(x_in[0]))
            _, x_mat = extractor.extract(block["x"][0], 1)
            if short == "default":
                shapes.append(f"{x_mat.c * x_mat.elempack} x {x_mat.h} x {x_mat.w}")
            for stage in ("x", "gates"):
                job = Job(runner, block["x"][0], x_mat.clone(), block[stage], REPEAT)
                sessions[f"{short} {k} {stage}"] = job
    feeds = {name: {"unused": np.zeros(1, np.float32)} for name in sessions}
    config = BenchConfig(runs=runs, threads=(1,), profile_runs=0)
    times = time_interleaved(sessions, feeds, config, clock=CLOCKS[clock])
    us = {name: float(np.median(t)) * 1e6 / REPEAT for name, t in times.items()}
    print(f"CA block gates in ncnn at {size}x{size}, us, {runs} interleaved runs, {clock} clock\n")
    print(f"| block | C x H x W | {' | '.join(BLOCK_FORMS)} |\n|---|---|---|---|---|")
    for k, shape in enumerate(shapes):
        cells = [us[f"{short} {k} gates"] - us[f"{short} {k} x"] for short in BLOCK_FORMS]
        print(f"| {k} | {shape} | {' | '.join(f'{v:.0f}' for v in cells)} |")


def main() -> None:
    parser = harness.parser(__doc__, runs=300, what="the ncnn files")
    harness.add_clock(parser)
    parser.add_argument("--blocks", action="store_true", help="time each block's gates")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        s = args.size
        params = {name: convert(name, folder, s) for name in (BASELINE, DEFAULT)}
        params |= {name: converted(name, folder, s) for name in VARIANTS}
        if args.blocks:
            block_gates(params, s, args.runs, args.clock)
            return
        sizes = [(s, s), (s - 64, s + 32), (s + 64, s + 64)]
        config = BenchConfig(runs=args.runs, threads=(1,), profile_runs=0)
        report = bench(params, (1, 3, s, s), config, clock=CLOCKS[args.clock])
        p50 = {t.name: t.p50_ms for t in report.timings}
        runs = f"{args.runs} interleaved runs, {args.clock} clock"
        print(f"\nMobileNetV2-CA in ncnn at {s}x{s}, 1 thread, {runs}")
        print(f"errors: max abs err / max |ref| at {', '.join(f'{h}x{w}' for h, w in sizes)}\n")
        rows = []
        for name, param in params.items():
            found = errors(BASELINE if name == BASELINE else DEFAULT, param, sizes)
            baked = len(ncnn.baked_sizes(ncnn.parse_param(param.read_text())))
            ms = p50[name]
            ratios = [f"{ms / p50[BASELINE] - 1:+.1%}", f"{ms / p50[DEFAULT] - 1:+.1%}"]
            rows.append([name, f"{ms:.2f}", *ratios, *(f"{e:.1e}" for e in found), str(baked)])
        sized = [f"{h}x{w}" for h, w in sizes]
        heads = ["form", "p50 ms", "vs no-CA", "vs default", *sized, "baked sizes"]
        print(harness.table(heads, rows))


if __name__ == "__main__":
    main()
