"""Where CA's cost goes on LiteRT with XNNPACK, and the floor no exact form can beat
(issue 23).

MobileNetV2-CA at 224 with each CA block replaced by a hand-written module, converted by
litert-torch (no ca-export rewrite), timed in one interleaved run on one thread against
the no-CA net and the ``litert`` form (``ca-export litert``'s file, timed twice, as
``litert`` and ``litert again``, for the run's noise). Exact forms (the
same CA, written another way; gated: max abs error over max |ref| against PyTorch):

- ``hand``: the ``litert`` form written out (strip ``avg_pool2d``, conv1 + BN + h_swish
  per strip, sigmoid gates, ``x * a_w * a_h``), to check the hand-written ones compare;
- ``hand a_h first``: ``x * a_h * a_w``;
- ``outer``: the outer product ``a_h * a_w`` first, then one same-shape multiply;
- ``mean pools``: strips as ``mean`` (MEAN) instead of AVERAGE_POOL_2D;
- ``outer mean``: both;
- ``cat stem``: MEAN strips, the W strip reshaped to ``[B, C, W, 1]``, conv1 + BN + h_swish
  once on their concat, split, the W part reshaped back (the official block's shared stem
  without its permutes): one conv1 per block instead of two;
- ``grouped stem``: both strips side by side on channels (square maps only), conv1 + BN
  + h_swish as one grouped conv (the weights twice), the gate convs as one grouped conv,
  one sigmoid, split: two convs per block instead of four;
- ``xnnpack form``: ca-export's ``xnnpack`` form (AVERAGE_POOL_2D strips, HARD_SWISH).

Static int8 (``int8``): the no-CA net, the ``litert`` form and the ``xnnpack`` form
quantized by ai-edge-quantizer (the ``litert --precision int8 --calibration`` path) on
four seeded inputs; "parts" shows whether XNNPACK runs the whole file.

Not CA (the floor, what the block's unavoidable ops cost), each piece adding to the one
before it up to ``outer mean``:

- ``identity``: no block at all, the CA net's own weights (is the no-CA net, drawn with
  other weights, a fair baseline?);
- ``muls``: the two multiplies by constant gates (not uniform), no pools;
- ``floor``: the two strip pools and the two broadcasting multiplies, the pools used as
  the gates (no conv, no activation);
- ``floor outer mean``: the same as MEAN strips, their outer product, one multiply;
- ``sigmoid gates``: ``floor outer mean`` with each pool through its sigmoid (the
  converter writes the H strip's MEAN without its kept axis and a strip RESHAPE after);
- ``linear stem``: the block without its h_swish: MEAN strips, conv1 + BN, the gate
  convs, sigmoids, outer product, one multiply. Every exact form computes these ops
  (conv1 once, on concatenated strips, in ``cat stem``) and an h_swish.

After the table: the fastest exact form, the linear stem, and the CA stems' multiply-adds
over the no-CA net's (``macs``), with the verdict on the +10% target.

Each round runs the files in a new order (``ca_export.bench``). Columns over the
no-CA net: ``x no-CA`` (p50 over p50), ``paired`` (the median over rounds of each round's
ratio, robust to load that comes and goes between rounds) and ``min`` (fastest over
fastest).

    python -m benchmarks.litert_floor --cache /tmp/litert-floor --runs 2000
"""

from __future__ import annotations

import json
import sys
import warnings
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import harness
from ca_export.bench import BenchConfig, bench
from ca_export.export import litert as lt
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.rewrites import rewrite
from ca_export.tracing import example_input, trace
from sample_models.mobilenetv2 import CoordAtt

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"
AGAIN = "litert again"
TARGET_OVERHEAD = 0.10
FORMS = {"litert": "litert", "xnnpack form": "xnnpack"}
"""Files rewritten by ca-export: the ``litert`` form, and the ``xnnpack`` form (AVERAGE_POOL_2D
strips, HARD_SWISH stems), which was the litert form before ``strip_mean`` and
``relu6_hswish``."""
INT8 = ("no-CA int8", "litert int8", "xnnpack form int8")
"""Static int8 files (ai-edge-quantizer, MinMax on ``CALIBRATION_SEEDS`` inputs)."""
CALIBRATION_SEEDS = (1, 2, 3, 4)
"""The ``litert`` file timed a second time, last in each round: the run's noise."""


def _stem(ca: CoordAtt, strip: torch.Tensor) -> torch.Tensor:
    return ca.act(ca.bn1(ca.conv1(strip)))


def _gates(ca: CoordAtt, x: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[2:]
    if pool == "mean":
        x_h, x_w = x.mean(3, keepdim=True), x.mean(2, keepdim=True)
    else:
        x_h, x_w = F.avg_pool2d(x, (1, w)), F.avg_pool2d(x, (h, 1))
    a_h = ca.conv_h(_stem(ca, x_h)).sigmoid()
    a_w = ca.conv_w(_stem(ca, x_w)).sigmoid()
    return a_h, a_w


def hand(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h, a_w = _gates(ca, x, "avg")
    return x * a_w * a_h


def hand_h_first(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h, a_w = _gates(ca, x, "avg")
    return x * a_h * a_w


def outer(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h, a_w = _gates(ca, x, "avg")
    return x * (a_h * a_w)


def mean_pools(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h, a_w = _gates(ca, x, "mean")
    return x * a_w * a_h


def outer_mean(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h, a_w = _gates(ca, x, "mean")
    return x * (a_h * a_w)


def cat_stem(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    x_h, x_w = x.mean(3, keepdim=True), x.mean(2, keepdim=True).reshape(1, c, w, 1)
    y_h, y_w = torch.split(_stem(ca, torch.cat([x_h, x_w], 2)), [h, w], 2)
    a_h = ca.conv_h(y_h).sigmoid()
    a_w = ca.conv_w(y_w.reshape(1, -1, 1, w)).sigmoid()
    return x * (a_h * a_w)


def grouped_stem(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    c, w = x.shape[1], x.shape[3]
    x_w = x.mean(2, keepdim=True).reshape(1, c, w, 1)
    pair = torch.cat([x.mean(3, keepdim=True), x_w], 1)
    bn = ca.bn1
    stats = [torch.cat([t, t]) for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias)]
    conv1 = torch.cat([ca.conv1.weight, ca.conv1.weight]), torch.cat([ca.conv1.bias] * 2)
    y = F.batch_norm(F.conv2d(pair, *conv1, groups=2), *stats, False, 0.0, bn.eps)
    y = ca.act(y)
    gates = (
        torch.cat([ca.conv_h.weight, ca.conv_w.weight]),
        torch.cat([ca.conv_h.bias, ca.conv_w.bias]),
    )
    a_h, a_w = torch.split(F.conv2d(y, *gates, groups=2).sigmoid(), [c, c], 1)
    return x * (a_h * a_w.reshape(1, c, 1, w))


def identity(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    return x


def sigmoid_gates(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    return x * (x.mean(3, keepdim=True).sigmoid() * x.mean(2, keepdim=True).sigmoid())


def linear_stem(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    a_h = ca.conv_h(ca.bn1(ca.conv1(x.mean(3, keepdim=True)))).sigmoid()
    a_w = ca.conv_w(ca.bn1(ca.conv1(x.mean(2, keepdim=True)))).sigmoid()
    return x * (a_h * a_w)


def floor(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    return x * F.avg_pool2d(x, (1, w)) * F.avg_pool2d(x, (h, 1))


def floor_outer_mean(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    return x * (x.mean(3, keepdim=True) * x.mean(2, keepdim=True))


def muls(ca: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    a_h = torch.linspace(0.5, 1.0, c * h).reshape(1, c, h, 1)
    a_w = torch.linspace(1.0, 0.5, c * w).reshape(1, c, 1, w)
    return x * a_w * a_h


class Swapped(nn.Module):
    """A CA block computed by ``body`` with the block's own weights."""

    def __init__(self, ca: CoordAtt, body: Callable[[CoordAtt, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.ca = ca
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.ca, x)


BODIES: dict[str, tuple[Callable[[CoordAtt, torch.Tensor], torch.Tensor], bool]] = {
    "hand": (hand, True),
    "hand a_h first": (hand_h_first, True),
    "outer": (outer, True),
    "mean pools": (mean_pools, True),
    "outer mean": (outer_mean, True),
    "cat stem": (cat_stem, True),
    "grouped stem": (grouped_stem, True),
    "identity": (identity, False),
    "muls": (muls, False),
    "floor": (floor, False),
    "floor outer mean": (floor_outer_mean, False),
    "sigmoid gates": (sigmoid_gates, False),
    "linear stem": (linear_stem, False),
}
"""Name: (block body, whether it is exact CA)."""


def _swapped(body: Callable[[CoordAtt, torch.Tensor], torch.Tensor]) -> nn.Module:
    net = load_model(MODEL).module
    for child in list(net.modules()):
        for key, grand in list(child.named_children()):
            if isinstance(grand, CoordAtt):
                child.add_module(key, Swapped(grand, body))
    return net.eval()


def convert(name: str, folder: Path, size: int) -> tuple[Path, dict[str, Any]]:
    """Convert one variant (reused from ``folder`` if there), inspect and gate it."""
    path, facts = folder / f"{name.replace(' ', '-')}-{size}.tflite", folder / f"{name}-{size}.json"
    if path.is_file() and facts.is_file():
        return path, json.loads(facts.read_text())
    print(f"converting {name} ...", file=sys.stderr, flush=True)
    shape = (1, 3, size, size)
    reference = load_model(MODEL).module
    base = name.removesuffix(" int8")
    if base == "no-CA":
        program = trace(load_model(BASELINE).module, shape, dynamic=False).program
    elif base in FORMS:
        traced = trace(reference, shape, dynamic=False).program
        program = rewrite(traced, True, FORMS[base]).program
    else:
        program = trace(_swapped(BODIES[base][0]), shape, dynamic=False).program
    x = example_input(shape, 0)
    buffer = lt.convert(program, x)
    if name != base:
        calibration = [example_input(shape, seed).numpy() for seed in CALIBRATION_SEEDS]
        buffer = lt.quantize(buffer, "int8-static", calibration)
    modules = [b.module for b in find(trace(reference, shape, dynamic=False).program.graph)[0]]
    seen = lt.inspect(buffer, modules)
    with torch.no_grad():
        ref = reference(x).numpy()
    got = lt.LiteRunner(buffer).run(x.numpy())[0]
    described = {
        "ops": len(seen.ops),
        "counts": seen.counts(),
        "transpose": len(seen.transposes),
        "partitions": seen.partitions,
        "outside": dict(Counter(o.op for o in seen.outside)),
        "error": float(np.abs(got - ref).max() / np.abs(ref).max()),
    }
    path.write_bytes(buffer)
    facts.write_text(json.dumps(described))
    return path, described


def macs(size: int) -> tuple[int, int]:
    """Multiply-adds of the CA stems (conv1 and the gate convs on the strips) and of the
    no-CA net (its convs and classifier) at ``size``."""
    stems: list[int] = []
    net: list[int] = []

    def stem(ca: nn.Module, args: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        assert isinstance(ca, CoordAtt)
        c, h, w = args[0].shape[1:]
        stems.append(2 * (h + w) * c * ca.conv1.out_channels)

    def layer(m: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            net.append(out.numel() * m.in_channels // m.groups * k)
        elif isinstance(m, nn.Linear):
            net.append(m.in_features * m.out_features)

    x = torch.zeros(1, 3, size, size)
    for model, hook, kind in ((MODEL, stem, CoordAtt), (BASELINE, layer, nn.Module)):
        module = load_model(model).module
        for m in module.modules():
            if isinstance(m, kind):
                m.register_forward_hook(hook)
        with torch.no_grad():
            module(x)
    return sum(stems), sum(net)


def interleaved(paths: dict[str, Path], runs: int) -> dict[str, np.ndarray]:
    """Per-round times (ms) of every file over ``runs`` rounds, in one interleaved run
    (``ca_export.bench`` runs each round in a new order)."""
    config = BenchConfig(20, runs, 0.0, (1,), profile_runs=0)
    report = bench(dict(paths), None, config)
    return {name: np.asarray(report.timing(name, 1).samples_ms) for name in paths}


def arguments() -> Namespace:
    parser = harness.parser(__doc__, runs=300)
    parser.add_argument(
        "--forms",
        default=",".join([*BODIES, "int8"]),
        help="comma-separated subset of the hand-written forms, and int8 for the static-int8 files",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
        chosen = args.forms.split(",")
        names = ["no-CA", "litert", "xnnpack form", *(n for n in BODIES if n in chosen)]
        names += [n for n in INT8 if "int8" in chosen]
        files = {name: convert(name, folder, args.size) for name in names}
        files[AGAIN] = files["litert"]
        paths = {name: path for name, (path, _) in files.items()}
        samples = interleaved(paths, args.runs)
    base = samples["no-CA"]
    rounds = len(base)
    print(
        f"{MODEL} at {args.size}x{args.size}, XNNPACK, 1 thread, {rounds} rounds interleaved, "
        "each in a new order"
    )
    print(
        f"  {'file':17}{'ops':>4}{'TRANSPOSE':>10}{'parts':>6}{'error':>9}{'p50 ms':>8}"
        f"{'x no-CA':>8}{'paired':>8}{'min':>7}  exact CA"
    )
    exacts: dict[str, float] = {}
    for name, (_, f) in files.items():
        t = samples[name]
        exact = "no" if name in BODIES and not BODIES[name][1] else "yes"
        exact = "-" if name == "no-CA" else "int8" if name.endswith("int8") else exact
        if exact == "yes":
            exacts[name] = float(np.median(t / base))
        print(
            f"  {name:17}{f['ops']:4d}{f['transpose']:10d}{f['partitions']:6d}{f['error']:9.1e}"
            f"{np.median(t):8.2f}"
            f"{np.median(t) / np.median(base):8.3f}{np.median(t / base):8.3f}"
            f"{t.min() / base.min():7.3f}  {exact}"
        )
    best = min(exacts, key=exacts.__getitem__)
    verdict = "met" if exacts[best] - 1 <= TARGET_OVERHEAD else "NOT met by any exact form"
    print(f"fastest exact form: {best}, CA overhead (paired) {exacts[best] - 1:+.1%}")
    if "linear stem" in samples:
        stem = float(np.median(samples["linear stem"] / base)) - 1
        print(f"linear stem (every exact form's ops but the h_swish): {stem:+.1%}")
    stem_macs, net_macs = macs(args.size)
    print(f"CA stems' arithmetic: {stem_macs / net_macs:.1%} of the no-CA net's MACs")
    print(f"target CA overhead <= {TARGET_OVERHEAD:.0%}: {verdict}")
    if "no-CA int8" in samples:
        for name in INT8[1:]:
            paired = float(np.median(samples[name] / samples["no-CA int8"]))
            print(f"static int8, {name.removesuffix(' int8')}: x no-CA int8 (paired) {paired:.3f}")


if __name__ == "__main__":
    main()
