"""Artifacts to verify: open an ONNX file or an ONNX Runtime format model (.ort) for ONNX
Runtime, an ExecuTorch .pte for ExecuTorch's runtime, a LiteRT .tflite for LiteRT's
interpreter (XNNPACK), or an ncnn model (.ncnn.param with its .ncnn.bin) for ncnn's, and say
which inputs each takes.

An ncnn model takes any size; one ``ca-export ncnn --fixed-size`` wrote is valid at one
size only, as its companion metadata (``OUT.ncnn.json``) says, and is checked there alone.

An ONNX file says its precision in its ``ca_export.precision`` metadata (``ca-export onnx``
and ``optimize`` write it): fp32, or a lossy fp16 or int8 that verify judges with the lossy
gate; a file without it is taken as fp32, one naming another precision is refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export import litert as lt
from ca_export.export.executorch import BACKEND, PteRunner
from ca_export.export.ncnn import BACKEND as NCNN_BACKEND
from ca_export.export.ncnn import files_of, read_metadata, stem_of
from ca_export.export.precision import PRECISIONS
from ca_export.verify.ncnn_runtime import NcnnRunner
from ca_export.verify.runtime import BACKEND as ORT_BACKEND
from ca_export.verify.runtime import cpu_session

DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


@dataclass
class OrtArtifact:
    """A model in ONNX Runtime's session on the CPU (an ONNX Runtime format file, .ort)."""

    path: Path
    session: ort.InferenceSession
    input_name: str
    input_dims: list[int | str]
    output_names: list[str]
    dtype: str

    def refuses(self, shape: tuple[int, ...]) -> str | None:
        """Why the artifact cannot take an input of ``shape``, or None if it can."""
        return _refuses(self.input_dims, shape)

    @property
    def backend(self) -> str:
        """The runtime it runs in, as the tolerance table names it."""
        return ORT_BACKEND

    @property
    def dynamic(self) -> bool:
        """Whether any input dimension is symbolic."""
        return any(isinstance(d, str) for d in self.input_dims)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the artifact on one input (cast to its dtype); ONNX Runtime's own log is kept
        quiet, and an input the model runs but the artifact cannot fails the check."""
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        try:
            feeds = {self.input_name: x.astype(self.dtype)}
            return list(self.session.run(self.output_names, feeds, quiet))
        except Exception as err:
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            why = (lines[0] if lines else type(err).__name__).split(" : ")[-1]
            shape = "x".join(map(str, x.shape))
            raise CheckFailedError(
                f"{self.path.name} cannot run a {shape} input that the model runs, so it is "
                f"not an artifact of this model (ONNX Runtime: {why})"
            ) from None


@dataclass
class OnnxArtifact(OrtArtifact):
    """An ONNX file loaded for ONNX Runtime on the CPU; its graph is kept for localisation.

    ``precision`` is its ``ca_export.precision`` metadata: fp32, or a lossy fp16 or int8.
    """

    model: onnx.ModelProto
    precision: str = "fp32"

    @property
    def lossy(self) -> bool:
        """Whether the file is a lossy conversion, judged by the lossy gate."""
        return self.precision != "fp32"


def _refuses(dims: list[int | str], shape: tuple[int, ...]) -> str | None:
    """Why an input of ``dims`` (ints fixed, strings symbolic) cannot take ``shape``."""
    if len(shape) != len(dims):
        return f"artifact takes rank-{len(dims)} input"
    fixed = [d for d, s in zip(dims, shape, strict=True) if isinstance(d, int)]
    wanted = [s for d, s in zip(dims, shape, strict=True) if isinstance(d, int)]
    if fixed != wanted:
        return "artifact's input is static " + "x".join(map(str, dims))
    return None


ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def open_ort(path: Path) -> OrtArtifact:
    """Load a .ort file in ONNX Runtime; a file it cannot load gives one clear error."""
    if not path.is_file():
        raise BadInputError(f"artifact {str(path)!r} does not exist")
    session = cpu_session(str(path), path.name)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BadInputError(f"{str(path)!r} has {len(inputs)} inputs; verify handles one image")
    if inputs[0].type not in ORT_DTYPES:
        raise BadInputError(f"{str(path)!r} takes {inputs[0].type}, not float32 or float16")
    dims: list[int | str] = [d if isinstance(d, int) else str(d or "?") for d in inputs[0].shape]
    outputs = [o.name for o in session.get_outputs()]
    return OrtArtifact(path, session, inputs[0].name, dims, outputs, ORT_DTYPES[inputs[0].type])


def open_onnx(path: Path) -> OnnxArtifact:
    """Load and check an ONNX file; a file that is not ONNX gives one clear error."""
    if path.is_dir():
        raise BadInputError(f"artifact {str(path)!r} is a folder, not an ONNX file")
    if not path.is_file():
        raise BadInputError(f"artifact {str(path)!r} does not exist")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(f"{str(path)!r} is not a valid ONNX model: {first}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    precision = meta.get("ca_export.precision", "fp32")
    if precision not in PRECISIONS:
        raise BadInputError(
            f"{str(path)!r} says ca_export.precision={precision!r}; verify knows "
            f"{', '.join(PRECISIONS)}"
        )
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BadInputError(f"{str(path)!r} has {len(inputs)} inputs; verify handles one image")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type not in DTYPES:
        raise BadInputError(f"{str(path)!r} takes {tensor.elem_type}, not float32 or float16")
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    session = cpu_session(str(path), path.name)
    outputs = [o.name for o in model.graph.output]
    dtype = DTYPES[tensor.elem_type]
    return OnnxArtifact(
        path, session, inputs[0].name, dims, outputs, dtype, model=model, precision=precision
    )


@dataclass
class PteArtifact:
    """An ExecuTorch program (.pte) loaded in ExecuTorch's runtime (XNNPACK on the CPU)."""

    path: Path
    runner: PteRunner
    input_dims: list[int | str]
    output_names: list[str]
    dtype: str = "float32"
    backend: str = BACKEND
    dynamic: bool = False

    def refuses(self, shape: tuple[int, ...]) -> str | None:
        """Why the program cannot take an input of ``shape``, or None if it can."""
        if list(shape) != self.input_dims:
            return "artifact's input is static " + "x".join(map(str, self.input_dims))
        return None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the program on one input."""
        return self.runner.run(x.astype(np.float32))


def open_pte(path: Path) -> PteArtifact:
    """Load a .pte for ExecuTorch; a file it cannot load gives one clear error."""
    if not path.is_file():
        raise BadInputError(f"artifact {str(path)!r} does not exist")
    runner = PteRunner(path.read_bytes(), repr(str(path)))
    if len(runner.input_sizes) != 1:
        raise BadInputError(
            f"{str(path)!r} has {len(runner.input_sizes)} inputs; verify handles one image"
        )
    count = runner.num_outputs
    names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    return PteArtifact(path, runner, list(runner.input_sizes[0]), names)


@dataclass
class TfliteArtifact(PteArtifact):
    """A LiteRT model (.tflite) in LiteRT's interpreter (XNNPACK, one thread), fed NCHW; a
    channels-last file (``ca-export litert --channels-last-io``) is fed NHWC by its runner."""

    runner: lt.LiteRunner  # type: ignore[assignment]  # a narrower runner, same interface


def open_tflite(path: Path) -> TfliteArtifact:
    """Load a .tflite for LiteRT; a file it cannot load gives one clear error.

    A file whose input is ``N, H, W, C`` with C at most 4 and H above 4 is taken as
    channels-last (an image of at most 4 channels; an NCHW image has its C there)."""
    if not path.is_file():
        raise BadInputError(f"artifact {str(path)!r} does not exist")
    lt.EXTRA.require()
    buffer = path.read_bytes()
    shape = lt.LiteRunner(buffer).input_shape
    channels_last = len(shape) == 4 and shape[3] <= 4 < shape[1]
    runner = lt.LiteRunner(buffer, channels_last)
    count = len(runner.outputs)
    names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    return TfliteArtifact(path, runner, list(runner.input_shape), names, backend=lt.BACKEND)


@dataclass
class NcnnArtifact:
    """An ncnn model in ncnn's runtime: fp32 with fp16 storage off, or (as its metadata
    says) fp16 with fp16 storage and arithmetic on, judged by the lossy gate. ``fixed`` is
    the one input shape a ``--fixed-size`` model is valid at (None: any size), and
    ``multiple`` the H and W multiples a size-safe one is exact at."""

    path: Path
    runner: NcnnRunner
    output_names: list[str]
    fixed: list[int] | None = None
    precision: str = "fp32"
    multiple: tuple[int, int] = (1, 1)
    dtype: str = "float32"
    backend: str = NCNN_BACKEND

    @property
    def lossy(self) -> bool:
        """Whether the model is an fp16 conversion, judged by the lossy gate."""
        return self.precision != "fp32"

    @property
    def dynamic(self) -> bool:
        """Whether the model is valid at every size."""
        return self.fixed is None

    @property
    def input_dims(self) -> list[int | str]:
        """The valid input shape of a fixed-size model; symbolic dims otherwise."""
        return list(self.fixed) if self.fixed is not None else ["N", "C", "H", "W"]

    def refuses(self, shape: tuple[int, ...]) -> str | None:
        """Why the model cannot take ``shape``: ncnn runs any rank-4 input."""
        return None if len(shape) == 4 else "artifact takes rank-4 input"

    def invalid_at(self, shape: tuple[int, ...]) -> str | None:
        """Why a fixed-size model's output at ``shape`` means nothing (or a size-safe one's
        at sizes off its multiples), or None."""
        if self.fixed is None:
            mh, mw = self.multiple
            if len(shape) != 4 or not (shape[2] % mh or shape[3] % mw):
                return None
            return (
                f"{self.path.name} is exact only where H is a multiple of {mh} and W of {mw}, "
                f"not at {shape[2]}x{shape[3]}: ncnn would run it and give wrong outputs"
            )
        if list(shape[1:]) == self.fixed[1:]:
            return None
        valid = "x".join(map(str, self.fixed[1:]))
        return (
            f"{self.path.name} is valid only at {valid} (ca-export ncnn --fixed-size), "
            f"not at {'x'.join(map(str, shape[1:]))}: ncnn would run it and give wrong outputs"
        )

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on one input."""
        return self.runner.run(x.astype(np.float32))


def open_ncnn(path: Path) -> NcnnArtifact:
    """Load an ncnn model (the param file and the weights beside it) and what ca-export
    recorded of it; a model it cannot load gives one clear error."""
    stem = stem_of(path)
    param, weights = files_of(stem)
    for needed in (param, weights):
        if not needed.is_file():
            raise BadInputError(f"ncnn file {str(needed)!r} does not exist")
    recorded = read_metadata(stem) or {}
    precision = recorded.get("precision", "fp32")
    if precision not in ("fp32", "fp16"):
        raise BadInputError(f"{str(param)!r} is {precision}; verify checks fp32 and fp16 ncnn")
    runner = NcnnRunner(param, weights, fp16=precision == "fp16")
    count = len(runner.outputs)
    names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    fixed = recorded.get("input_shape") if recorded.get("fixed_size") else None
    mh, mw = recorded.get("hw_multiple", [1, 1])
    return NcnnArtifact(param, runner, names, fixed, precision, multiple=(int(mh), int(mw)))
