"""The NumPy MIL evaluator: every op against PyTorch, every sample's Core ML conversion, a bad one.

Op tests build one-op programs with coremltools' MIL Builder. Sample conversions use the
project's emitter at small sizes, once per module; each is checked on one seeded input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import assert_within, comparisons

from ca_export.export import coreml as coreml_export
from ca_export.export.coreml import InputSpec, Target
from ca_export.export.coreml_compress import CONSTEXPR_OPS
from ca_export.pipeline.common import Prepared
from ca_export.tracing import example_input
from ca_export.verify.mil.ops import OPS, Unsupported
from ca_export.verify.mil.parity import NotVerified, mil_parity
from ca_export.verify.mil.program import MilProgram, evaluate, uncovered
from ca_export.verify.parity import GateResult
from cli.main import cli

ct = coreml_export.coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402

SMALL = {
    "seed_ca": (1, 3, 32, 32),
    "mobilenetv2_ca": (1, 3, 64, 64),
    "mobilenext_ca": (1, 3, 64, 64),
    "ca_segnet": (1, 3, 64, 64),
    "mobilenetv2": (1, 3, 64, 64),
}
# fp16 at 64x64: PyTorch itself in fp16 is off by more than the signal's RMS on these.
FP16_UNJUDGEABLE = {"mobilenetv2_ca", "mobilenext_ca"}
PERTURBED = """
import torch
from sample_models import build

def seed_perturbed():
    model = build("seed_ca")
    with torch.no_grad():
        model.stages[3].yfc.weight.mul_(1.5)
    return model
"""

RNG = np.random.default_rng(0)


def _arr(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


W3, B3 = _arr(8, 4, 3, 3), _arr(8)
WD = _arr(8, 1, 3, 3)
WG = _arr(6, 2, 3, 3)
WL, BL = _arr(5, 6), _arr(5)
MEAN, VAR, GAMMA, BETA = _arr(4), np.abs(_arr(4)) + 0.5, _arr(4), _arr(4)
Y4 = _arr(1, 4, 1, 6)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _conv_torch(x: torch.Tensor, **kw: Any) -> torch.Tensor:
    return F.conv2d(x, t(W3), t(B3), **kw)


# name -> (input shape, MIL builder on x, PyTorch on x)
CASES: dict[str, tuple[tuple[int, ...], Callable[[Any], Any], Callable[[torch.Tensor], Any]]] = {
    "relu": ((2, 3, 4), lambda x: mb.relu(x=x), F.relu),
    "relu6": (
        (2, 3, 4),
        lambda x: mb.relu6(x=mb.mul(x=x, y=np.float32(4))),
        lambda x: F.relu6(x * 4),
    ),
    "clip": ((2, 3, 4), lambda x: mb.clip(x=x, alpha=-0.5, beta=0.7), lambda x: x.clamp(-0.5, 0.7)),
    "sigmoid": ((2, 3, 4), lambda x: mb.sigmoid(x=x), torch.sigmoid),
    "sigmoid_hard": (
        (2, 3, 4),
        lambda x: mb.sigmoid_hard(x=mb.mul(x=x, y=np.float32(4)), alpha=1 / 6, beta=0.5),
        lambda x: F.hardsigmoid(x * 4),
    ),
    "silu": ((2, 3, 4), lambda x: mb.silu(x=x), F.silu),
    "thresholded_relu": (
        (2, 3, 4),
        lambda x: mb.thresholded_relu(x=x, alpha=0.3),
        lambda x: F.threshold(x, 0.3, 0.0),
    ),
    "leaky_relu": (
        (2, 3, 4),
        lambda x: mb.leaky_relu(x=x, alpha=0.1),
        lambda x: F.leaky_relu(x, 0.1),
    ),
    "tanh": ((2, 3, 4), lambda x: mb.tanh(x=x), torch.tanh),
    "exp": ((2, 3, 4), lambda x: mb.exp(x=x), torch.exp),
    "sqrt": ((2, 3, 4), lambda x: mb.sqrt(x=mb.mul(x=x, y=x)), lambda x: torch.sqrt(x * x)),
    "rsqrt": (
        (2, 3, 4),
        lambda x: mb.rsqrt(x=mb.mul(x=x, y=x), epsilon=0.1),
        lambda x: torch.rsqrt(x * x + 0.1),
    ),
    "gelu": ((2, 3, 4), lambda x: mb.gelu(x=x), F.gelu),
    "softmax": ((2, 3, 4), lambda x: mb.softmax(x=x, axis=1), lambda x: F.softmax(x, 1)),
    "add": ((1, 4, 5, 6), lambda x: mb.add(x=x, y=Y4), lambda x: x + t(Y4)),
    "sub": ((1, 4, 5, 6), lambda x: mb.sub(x=x, y=Y4), lambda x: x - t(Y4)),
    "mul": ((1, 4, 5, 6), lambda x: mb.mul(x=x, y=Y4), lambda x: x * t(Y4)),
    "real_div": ((1, 4, 5, 6), lambda x: mb.real_div(x=x, y=Y4 + 3), lambda x: x / t(Y4 + 3)),
    "maximum": ((1, 4, 5, 6), lambda x: mb.maximum(x=x, y=Y4), lambda x: torch.maximum(x, t(Y4))),
    "minimum": ((1, 4, 5, 6), lambda x: mb.minimum(x=x, y=Y4), lambda x: torch.minimum(x, t(Y4))),
    "pow": ((2, 3), lambda x: mb.pow(x=x, y=np.float32(2.0)), lambda x: x**2),
    "cast": (
        (2, 3),
        lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
        lambda x: x.half().float(),
    ),
    "identity": ((2, 3), lambda x: mb.identity(x=x), lambda x: x),
    "linear": (
        (3, 6),
        lambda x: mb.linear(x=x, weight=WL, bias=BL),
        lambda x: F.linear(x, t(WL), t(BL)),
    ),
    "matmul": (
        (2, 6, 5),
        lambda x: mb.matmul(x=x, y=WL, transpose_x=True, transpose_y=True),
        lambda x: x.transpose(1, 2) @ t(WL).T,
    ),
    "conv": (
        (2, 4, 9, 11),
        lambda x: mb.conv(
            x=x, weight=W3, bias=B3, strides=[2, 1], pad_type="custom", pad=[1, 2, 0, 1]
        ),
        lambda x: _conv_torch(F.pad(x, (0, 1, 1, 2)), stride=(2, 1)),
    ),
    "batch_norm": (
        (2, 4, 3, 3),
        lambda x: mb.batch_norm(x=x, mean=MEAN, variance=VAR, gamma=GAMMA, beta=BETA, epsilon=1e-3),
        lambda x: F.batch_norm(x, t(MEAN), t(VAR), t(GAMMA), t(BETA), eps=1e-3),
    ),
    "layer_norm": (
        (2, 3, 4),
        lambda x: mb.layer_norm(x=x, axes=[-1], epsilon=1e-5),
        lambda x: F.layer_norm(x, (4,)),
    ),
    "avg_pool": (
        (1, 4, 7, 8),
        lambda x: mb.avg_pool(x=x, kernel_sizes=[1, 8], strides=[1, 8], pad_type="valid"),
        lambda x: F.adaptive_avg_pool2d(x, (7, 1)),
    ),
    "max_pool": (
        (1, 4, 7, 8),
        lambda x: mb.max_pool(
            x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]
        ),
        lambda x: F.max_pool2d(x, 3, 2, 1),
    ),
    "reduce_mean": (
        (1, 4, 7, 8),
        lambda x: mb.reduce_mean(x=x, axes=[3], keep_dims=True),
        lambda x: x.mean(3, keepdim=True),
    ),
    "reduce_sum": ((2, 3, 4), lambda x: mb.reduce_sum(x=x, axes=[0, 2]), lambda x: x.sum((0, 2))),
    "reduce_max": ((2, 3, 4), lambda x: mb.reduce_max(x=x, axes=[1]), lambda x: x.amax(1)),
    "concat": (
        (1, 4, 5, 1),
        lambda x: mb.concat(values=[x, mb.relu(x=x)], axis=2),
        lambda x: torch.cat([x, F.relu(x)], 2),
    ),
    "split": (
        (1, 4, 7, 1),
        lambda x: mb.split(x=x, split_sizes=[3, 4], axis=2)[1],
        lambda x: torch.split(x, [3, 4], 2)[1],
    ),
    "slice_by_index": (
        (2, 5, 6),
        lambda x: mb.slice_by_index(
            x=x,
            begin=[0, 1, 0],
            end=[0, -1, 5],
            stride=[1, 2, 1],
            begin_mask=[False, False, True],
            end_mask=[True, False, False],
            squeeze_mask=[False, False, False],
        ),
        lambda x: x[:, 1:-1:2, :5],
    ),
    "slice_by_size": (
        (2, 5, 6),
        lambda x: mb.slice_by_size(x=x, begin=[0, 1, 2], size=[-1, 3, 2]),
        lambda x: x[:, 1:4, 2:4],
    ),
    "transpose": (
        (1, 4, 5, 1),
        lambda x: mb.transpose(x=x, perm=[0, 1, 3, 2]),
        lambda x: x.permute(0, 1, 3, 2),
    ),
    "reshape": (
        (2, 3, 4),
        lambda x: mb.reshape(x=x, shape=[0, -1, 2]),
        lambda x: x.reshape(2, 6, 2),
    ),
    "squeeze": ((1, 4, 5, 1), lambda x: mb.squeeze(x=x, axes=[3]), lambda x: x.squeeze(3)),
    "expand_dims": (
        (4, 5),
        lambda x: mb.expand_dims(x=x, axes=[0, -1]),
        lambda x: x[None, :, :, None],
    ),
    "tile": (
        (1, 4, 5, 1),
        lambda x: mb.tile(x=x, reps=[1, 1, 1, 3]),
        lambda x: x.expand(1, 4, 5, 3),
    ),
    "pad": (
        (1, 2, 3, 4),
        lambda x: mb.pad(x=x, pad=[1, 0, 2, 1], mode="reflect"),
        lambda x: F.pad(x, (2, 1, 1, 0), mode="reflect"),
    ),
    "upsample_bilinear": (
        (1, 2, 3, 5),
        lambda x: mb.upsample_bilinear(
            x=x, scale_factor_height=4.0, scale_factor_width=2.0, align_corners=False
        ),
        lambda x: F.interpolate(x, scale_factor=(4, 2), mode="bilinear", align_corners=False),
    ),
    "resize_bilinear": (
        (1, 2, 3, 5),
        lambda x: mb.resize_bilinear(
            x=x, target_size_height=7, target_size_width=4, sampling_mode="ALIGN_CORNERS"
        ),
        lambda x: F.interpolate(x, size=(7, 4), mode="bilinear", align_corners=True),
    ),
    "upsample_nearest_neighbor": (
        (1, 2, 3, 5),
        lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
        lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest"),
    ),
    "resize_nearest_neighbor": (
        (1, 2, 3, 5),
        lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=6, target_size_width=10),
        lambda x: F.interpolate(x, size=(6, 10), mode="nearest"),
    ),
}
# More forms of the ops CA networks lean on: grouped/dilated/"same" conv, padded pools.
VARIANTS: dict[str, tuple[tuple[int, ...], Callable[[Any], Any], Callable[[torch.Tensor], Any]]] = {
    "conv depthwise same stride 2": (
        (1, 8, 9, 10),
        lambda x: mb.conv(x=x, weight=WD, strides=[2, 2], pad_type="same", groups=8),
        lambda x: F.conv2d(F.pad(x, (0, 1, 1, 1)), t(WD), stride=2, groups=8),
    ),
    "conv dilated grouped valid": (
        (1, 4, 9, 10),
        lambda x: mb.conv(x=x, weight=WG, dilations=[2, 1], groups=2),
        lambda x: F.conv2d(x, t(WG), dilation=(2, 1), groups=2),
    ),
    "avg_pool padded, padding excluded": (
        (1, 2, 5, 6),
        lambda x: mb.avg_pool(
            x=x,
            kernel_sizes=[3, 3],
            strides=[2, 2],
            pad_type="custom",
            pad=[1, 1, 1, 1],
            exclude_padding_from_average=True,
        ),
        lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    "avg_pool padded, padding counted": (
        (1, 2, 5, 6),
        lambda x: mb.avg_pool(
            x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]
        ),
        lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
    ),
    "upsample_bilinear align_corners": (
        (1, 2, 3, 5),
        lambda x: mb.upsample_bilinear(
            x=x, scale_factor_height=2.0, scale_factor_width=3.0, align_corners=True
        ),
        lambda x: F.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=True),
    ),
    "resize_bilinear unaligned": (
        (1, 2, 4, 6),
        lambda x: mb.resize_bilinear(
            x=x, target_size_height=5, target_size_width=9, sampling_mode="UNALIGN_CORNERS"
        ),
        lambda x: F.interpolate(x, size=(5, 9), mode="bilinear", align_corners=False),
    ),
    "gelu tanh": (
        (2, 3, 4),
        lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
        lambda x: F.gelu(x, approximate="tanh"),
    ),
}


def build(shape: tuple[int, ...], body: Callable[[Any], Any], opset: Any = None) -> MilProgram:
    """A one-function MIL program taking one fp32 input of ``shape``."""
    kwargs = {"opset_version": opset} if opset is not None else {}

    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], **kwargs)
    def program(x: Any) -> Any:
        return body(x)

    return MilProgram(Path("built"), None, program.functions["main"])


def _run(program: MilProgram, x: np.ndarray) -> np.ndarray:
    return evaluate(program, {"x": x})[program.output_names[0]]


def test_every_op_has_a_case() -> None:
    """``classify`` (a label and a dict of scores) is tested in test_coreml_classifier, the
    weight decompression ops in test_mil_constexpr."""
    assert set(CASES) | {"classify", *CONSTEXPR_OPS} == set(OPS)


@pytest.mark.parametrize("name", sorted({**CASES, **VARIANTS}))
def test_op_matches_pytorch(name: str) -> None:
    shape, body, reference = {**CASES, **VARIANTS}[name]
    program = build(shape, body)
    assert name.split()[0] in {op.op_type for op in program.function.operations}
    x = _arr(*shape)
    got = _run(program, x)
    expected = reference(t(x)).numpy()
    assert got.shape == expected.shape
    assert_within(expected, got)


def test_fp16_program_rounds_every_activation() -> None:
    """A cast-to-fp16 program holds values in fp16: the result is PyTorch's in half steps."""

    def body(x: Any) -> Any:
        h = mb.cast(x=x, dtype="fp16")
        y = mb.sigmoid(x=mb.mul(x=h, y=np.float16(3.0)))
        return mb.cast(x=mb.add(x=y, y=h), dtype="fp32")

    x = _arr(4, 64)
    got = _run(build(x.shape, body), x)
    h = t(x).half().float()
    y = torch.sigmoid((h * 3).half().float()).half().float()
    np.testing.assert_array_equal(got, (y + h).half().float().numpy())
    fp32 = (torch.sigmoid(t(x) * 3) + t(x)).numpy()
    assert not all(c.passed for c in comparisons(fp32, got)), "fp16 steps exceed the exact row"


def test_op_without_implementation_is_not_verified() -> None:
    program = build((2, 3), lambda x: mb.sin(x=x))
    assert uncovered(program) == ["sin"]
    with pytest.raises(Unsupported, match="op sin"):
        _run(program, _arr(2, 3))


def test_unsupported_parameter_value_is_not_verified() -> None:
    program = build(
        (1, 2, 5, 5),
        lambda x: mb.avg_pool(
            x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=True
        ),
    )
    with pytest.raises(Unsupported, match="ceil_mode"):
        _run(program, _arr(1, 2, 5, 5))


def _save(program: Any, path: Path, fmt: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.convert(
            program,
            convert_to=fmt,
            minimum_deployment_target=ct.target.iOS15 if fmt == "mlprogram" else None,
        ).save(str(path))
    return path


def test_mil_parity_says_why_it_did_not_run(tmp_path: Path) -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3))])
    def sine(x: Any) -> Any:
        return mb.sin(x=x)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3))])
    def rectify(x: Any) -> Any:
        return mb.relu(x=x)

    model = torch.nn.ReLU()
    inputs = [(1, torch.tensor([[-1.0, 0.5, 2.0]]))]
    result = mil_parity(_save(sine, tmp_path / "s.mlpackage", "mlprogram"), model, inputs, "fp32")
    assert result == NotVerified("not verified: op sin")
    result = mil_parity(_save(sine, tmp_path / "s.mlmodel", "neuralnetwork"), model, inputs, "fp32")
    assert isinstance(result, NotVerified) and "layer " in result.reason
    result = mil_parity(
        _save(rectify, tmp_path / "r.mlmodel", "neuralnetwork"), model, inputs, "fp32"
    )
    assert isinstance(result, GateResult) and result.passed, result


class _Packages(dict):
    """``packages[(name, precision)]``: the sample converted by the project's emitter and saved,
    made on first use (so a case marked slow costs nothing in the fast suite);
    ``packages[(name, "model")]``: its PyTorch module."""

    def __init__(self, folder: Path, prepared: Callable[..., Prepared]) -> None:
        super().__init__()
        self.folder = folder
        self.prepared = prepared

    def __missing__(self, key: tuple[str, str]) -> Any:
        name, what = key
        shape = SMALL[name]
        prep = self.prepared(name, shape)
        if what == "model":
            self[key] = prep.module
            return prep.module
        coreml_export.tag(prep.program, [b.module for b in prep.blocks])
        spec = InputSpec(prep.traced.input_names[0], shape)
        target = Target("mlprogram", what, "iOS15")
        model = coreml_export.convert(prep.program, spec, target, prep.traced.output_names)
        path = self.folder / f"{name}_{what}.mlpackage"
        coreml_export.save(model, path)
        self[key] = path
        return path


@pytest.fixture(scope="module")
def packages(
    tmp_path_factory: pytest.TempPathFactory, prepared: Callable[..., Prepared]
) -> dict[tuple[str, str], Any]:
    """Samples converted by the project's emitter (fp16, fp32) on first use, and their modules;
    traces are shared with test_coreml through the session's ``prepared``."""
    return _Packages(tmp_path_factory.mktemp("mil"), prepared)


SLOW = {
    ("mobilenetv2", "fp32"),
    ("mobilenetv2", "fp16"),
    ("mobilenext_ca", "fp32"),
    ("mobilenetv2_ca", "fp16"),
}
"""Run with ``-m slow``. The fast suite evaluates the rewritten seed_ca and ca_segnet programs
(fp32, fp16), mobilenetv2_ca's (fp32), mobilenext_ca's fp16 not-verified case, and every op the
evaluator has (``test_op_matches_pytorch``). mobilenetv2 is mobilenetv2_ca without its CA
blocks; mobilenetv2_ca's fp16 case is the same not-verified path as mobilenext_ca's."""


@pytest.mark.parametrize(
    ("name", "precision"),
    [
        pytest.param(name, precision, marks=pytest.mark.slow if (name, precision) in SLOW else ())
        for name in sorted(SMALL)
        for precision in ["fp32", "fp16"]
    ],
)
def test_sample_conversion_matches_pytorch(
    packages: dict[tuple[str, str], Any], name: str, precision: str
) -> None:
    inputs = [(1, example_input(SMALL[name], 1))]
    result = mil_parity(packages[(name, precision)], packages[(name, "model")], inputs, precision)
    if precision == "fp16" and name in FP16_UNJUDGEABLE:
        assert isinstance(result, NotVerified)
        assert "the model itself at this precision" in result.reason
        return
    assert isinstance(result, GateResult), result
    assert result.passed, result.failures()
    assert result.cases and result.worst("rel_err") > 0


def test_verify_command_passes_the_conversion(packages: dict[tuple[str, str], Any]) -> None:
    result = CliRunner().invoke(
        cli, ["verify", "seed_ca", str(packages[("seed_ca", "fp16")]), "--input-shape", "1,3,32,32"]
    )
    assert result.exit_code == 0, result.output
    assert "(float16, coreml-mil-numpy): passed" in result.output
    assert "Core ML prediction did not run" in result.output


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_verify_command_fails_a_package_of_other_weights(
    packages: dict[tuple[str, str], Any], tmp_path: Path, precision: str
) -> None:
    """The package of seed_ca against seed_ca with one CA block's gate conv scaled by 1.5."""
    factory = tmp_path / "perturbed.py"
    factory.write_text(PERTURBED)
    spec = f"{factory}:seed_perturbed"
    result = CliRunner().invoke(
        cli, ["verify", spec, str(packages[("seed_ca", precision)]), "--input-shape", "1,3,32,32"]
    )
    assert result.exit_code == 1, result.output
    assert "FAIL " in result.output
