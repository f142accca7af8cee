"""Deterministic, input-sensitive weights for the sample networks.

``build_calibrated`` constructs a network and turns it into the one every build returns:

1. ``init_weights``: every parameter is drawn from a local ``torch.Generator``; the global RNG
   state is left as it was.
2. ``calibrate_batchnorm``: BN running statistics become the cumulative average of the batch
   statistics over a few seeded random batches.
3. ``standardize_output``: the output layer's weight and bias (each output layer's, for a
   network with several outputs) are shifted and scaled so each output channel is zero-mean
   with unit overall std on seeded random batches. Without it the
   input-independent part of a randomly initialised classifier (the bias and the mean of the
   pooled features) dominates the logits, and every input gets nearly the same output.

The network is returned in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

ModelT = TypeVar("ModelT", bound=nn.Module)
OutputLayer = nn.Linear | nn.Conv2d

CALIBRATION_SIZE: tuple[int, int] = (64, 64)
"""Default ``(H, W)`` of the calibration batches."""

_BATCHES = 4
_BATCH_SIZE = 4
_BIAS_STD = 0.1
_LINEAR_STD = 0.01
_BN_AFFINE_STD = 0.1


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard-normal tensor of ``shape`` drawn from a local generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Draw every parameter of ``model`` from ``generator``, in module order.

    Convolutions get Kaiming-normal weights (fan-in, ReLU gain), which keeps activations at a
    stable scale also where no BN follows; linear layers get N(0, 0.01) weights. Biases are
    N(0, 0.1), BN weights N(1, 0.1) and BN biases N(0, 0.1), so a graph transform that drops or
    misplaces a bias or a BN affine term changes the output.

    Args:
        model: Network to initialise in place.
        generator: Source of all random numbers.

    Raises:
        TypeError: If a module owns parameters of a kind this function does not initialise.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, _LINEAR_STD, generator=generator)
        elif isinstance(module, _BatchNorm):
            module.weight.normal_(1.0, _BN_AFFINE_STD, generator=generator)
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"no seeded init for {type(module).__name__}")
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.normal_(0.0, _BIAS_STD, generator=generator)


def _calibration_batches(
    generator: torch.Generator, channels: int, size: tuple[int, int]
) -> list[torch.Tensor]:
    """``_BATCHES`` standard-normal batches of shape ``[_BATCH_SIZE, channels, *size]``."""
    shape = (_BATCH_SIZE, channels, *size)
    return [torch.randn(shape, generator=generator) for _ in range(_BATCHES)]


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Set every BN layer's running statistics to the average batch statistics of ``batches``.

    Only the BN layers are switched to train mode, so dropout stays off and the global RNG is
    not consumed. Each layer's momentum is restored afterwards.

    Args:
        model: Network whose BN layers are calibrated in place.
        batches: Inputs for the calibration forward passes.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for batch in batches:
        model(batch)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    model.eval()


@torch.no_grad()
def standardize_output(
    model: nn.Module, layer: nn.Linear | nn.Conv2d, batches: list[torch.Tensor]
) -> None:
    """Rescale ``layer`` so its outputs on ``batches`` are zero-mean per channel, unit std overall.

    ``layer`` must be the last layer with parameters before the network output (any later step,
    such as upsampling, must be linear), and must have a bias.

    Args:
        model: Network containing ``layer``, in eval mode.
        layer: Output layer; its weight and bias are rewritten in place.
        batches: Inputs whose outputs define the statistics.

    Raises:
        ValueError: If ``layer`` has no bias or its outputs are constant over ``batches``.
    """
    if layer.bias is None:
        raise ValueError("the output layer needs a bias to be centred")
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        for batch in batches:
            model(batch)
    finally:
        handle.remove()
    channels_first = torch.cat([out.transpose(0, 1).flatten(1) for out in outputs], dim=1)
    mean = channels_first.mean(dim=1)
    std = (channels_first - mean[:, None]).std()
    if not torch.isfinite(std) or std <= 0:
        raise ValueError("the output layer's outputs do not depend on the input")
    layer.bias.sub_(mean).div_(std)
    layer.weight.div_(std)


def build_calibrated(
    make: Callable[[], ModelT],
    *,
    seed: int,
    output_layer: Callable[[ModelT], OutputLayer | Sequence[OutputLayer]],
    input_size: tuple[int, int] = CALIBRATION_SIZE,
    in_channels: int = 3,
) -> ModelT:
    """Construct a network, seed-initialise it, calibrate its BN and output layers.

    The constructor runs under ``torch.random.fork_rng``, so PyTorch's default initialisation
    leaves the global RNG state as it was; every weight is then redrawn from a generator seeded
    with ``seed``, which also draws the calibration inputs.

    Args:
        make: Constructor of the network.
        seed: Seed of the generator behind the weights and the calibration inputs.
        output_layer: Picks the layer producing the network output (see
            ``standardize_output``), or the layers producing each output: every one must be a
            last layer, none reading another's output. All are standardised on the same
            batches.
        input_size: ``(H, W)`` of the calibration inputs.
        in_channels: Channels of the network input.

    Returns:
        The network, in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        model = make()
    generator = torch.Generator().manual_seed(seed)
    init_weights(model, generator)
    calibrate_batchnorm(model, _calibration_batches(generator, in_channels, input_size))
    layers = output_layer(model)
    batches = _calibration_batches(generator, in_channels, input_size)
    for layer in layers if isinstance(layers, Sequence) else [layers]:
        standardize_output(model, layer, batches)
    return model.eval()
