"""Run an ncnn model in ncnn's Python runtime, as the gate and ``bench`` open it.

ncnn's blobs have no batch axis: each sample of an ``[N, C, H, W]`` input is fed alone
(``in0``, ``[C, H, W]``) and every output blob (``out0``, ``out1``, ...) gets its batch
axis back, the samples stacked. On x86 ncnn stores activations in fp16 by default
(measured on ``mobilenetv2_ca``: 5.4e-4 of the logits' scale); an fp32 model runs with
fp16 storage, packing and arithmetic off, and with Winograd convolutions off, so its gate
sees plain fp32 arithmetic only: ncnn's Winograd 3x3 kernels put the YOLO samples' box
columns 3.5 to 4.5 times PyTorch fp32's own error from float64 (``yolo_ca`` at 224, 160x96;
``yolov5_ca`` at 320), a correct conversion's noise that would hide a wrong one; without them
the same files are within 1.85 times. An fp16 model runs with all of them on, as a phone
would run it; ``bench`` times fp32 models with Winograd on too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export.ncnn import (
    BACKEND,
    EXTRA,
    INPUT,
    BlockBlobs,
    ca_blocks,
    input_blobs,
    output_blobs,
    parse_param,
)
from ca_export.patterns import AtenBlock
from ca_export.verify.parity import GateResult, block_values, runtime_block_gate


class NcnnRunner:
    """An ncnn param file and its weights, loaded and ready to run."""

    def __init__(
        self,
        param: Path,
        weights: Path,
        fp16: bool = False,
        threads: int = 1,
        winograd: bool | None = None,
    ) -> None:
        """``winograd`` None: on for an fp16 model only (the gate's choice)."""
        EXTRA.require()
        import ncnn

        layers = parse_param(param.read_text(errors="replace"), repr(str(param)))
        inputs = input_blobs(layers)
        if inputs != [INPUT]:
            raise BadInputError(f"{str(param)!r} takes inputs {inputs}; verify handles one, in0")
        self.outputs = output_blobs(layers)
        self.layers = layers
        net = ncnn.Net()
        net.opt.use_fp16_storage = fp16
        net.opt.use_fp16_packed = fp16
        net.opt.use_fp16_arithmetic = fp16
        net.opt.use_winograd_convolution = fp16 if winograd is None else winograd
        net.opt.num_threads = threads
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise BadInputError(f"ncnn cannot load {str(param)!r} with {str(weights)!r}")
        self.net = net

    def run_sample(
        self, sample: np.ndarray, source: str = INPUT, blobs: list[str] | None = None
    ) -> list[np.ndarray]:
        """The ``blobs`` (default: every output) computed from one ``[C, H, W]`` sample fed
        to the blob ``source`` (default: the input), without a batch axis."""
        import ncnn

        extractor = self.net.create_extractor()
        held = ncnn.Mat(np.ascontiguousarray(sample, np.float32)).clone()
        extractor.input(source, held)
        found = []
        for blob in self.outputs if blobs is None else blobs:
            status, mat = extractor.extract(blob)
            if status != 0:
                shape = "x".join(map(str, sample.shape))
                raise CheckFailedError(f"ncnn cannot compute {blob} for a {shape} sample")
            found.append(np.array(mat, copy=True))
        return found

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for an ``[N, C, H, W]`` input, the batch axis put back."""
        per_sample = [self.run_sample(sample) for sample in x]
        return [np.stack(outs) for outs in zip(*per_sample, strict=True)]

    def run_block(self, block: BlockBlobs, x: np.ndarray) -> np.ndarray:
        """A block's output for its ``[N, C, H, W]`` input, computed from it alone."""
        return np.stack([self.run_sample(s, block.source, [block.output])[0] for s in x])

    def locate_blocks(
        self, found: list[BlockBlobs], program: ExportedProgram, sources: list[str], x: torch.Tensor
    ) -> list[BlockBlobs] | str:
        """The block of ``found`` for each block of ``program`` (named by its input node,
        in ``sources``' order), or why they do not match one to one.

        On ``x``'s first sample each block is matched to the one whose input holds the
        values nearest the program's input to it, of those of its shape. Where a model
        wrong before its blocks leaves that ambiguous, they are matched in file order
        (pnnx writes layers in the order the program runs them), if the channels agree."""
        if len(found) != len(sources):
            return f"{len(found)} CA blocks found in the param file, {len(sources)} in the model"
        expected = block_values(program, set(sources), x[:1])
        wanted = [expected[name][0].numpy() for name in sources]
        held = self.run_sample(x[0].numpy(), blobs=[b.source for b in found])
        located = []
        for want in wanted:
            same = [k for k, got in enumerate(held) if got.shape == want.shape]
            scale = float(np.abs(want).max()) or 1.0
            nearest = min(
                same, key=lambda k: float(np.abs(held[k] - want).max()) / scale, default=None
            )
            located.append(None if nearest is None else found[nearest])
        if None not in located and len(set(located)) == len(located):
            return [b for b in located if b is not None]
        if all(got.shape[0] == want.shape[0] for got, want in zip(held, wanted, strict=True)):
            return found
        return "their inputs match neither by value nor, in file order, by channels"

    def block_gate(
        self,
        program: ExportedProgram,
        blocks: Sequence[AtenBlock],
        inputs: Sequence[tuple[int, torch.Tensor]],
        tolerances: tuple[float | None, float | None] = (None, None),
    ) -> GateResult | str:
        """Each of ``program``'s CA ``blocks`` judged inside this model on ``inputs``, fed
        the program's input to it (``parity.runtime_block_gate``), or why it cannot be: the
        param file's blocks (``export.ncnn.ca_blocks``) do not match them one to one."""
        sources = [b.source.name for b in blocks]
        found = ca_blocks(self.layers)
        located = self.locate_blocks(found, program, sources, inputs[0][1])
        if isinstance(located, str):
            return located
        names = [(b.module, b.source.name, b.output.name) for b in blocks]

        def run(k: int, x: np.ndarray) -> np.ndarray:
            return self.run_block(located[k], x)

        return runtime_block_gate(program, names, run, inputs, BACKEND, tolerances)
