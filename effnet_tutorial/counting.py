"""Counting parameters and multiply-adds, the two costs every table in the book reports.

The papers' "FLOPs" are multiply-adds (one multiply plus one add counts once). We count them the
way the reference figures were measured: every convolution and linear layer, exactly, from the
shapes a real forward pass produces. Batch norm, activations, the SE multiply and the residual
adds are elementwise and left out (they are under 1% of B0's total).

In the book: Chapter 2, *Depthwise separable convolutions*.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .utils import evaluating

InputSize = int | tuple[int, int] | tuple[int, int, int]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters (weights and biases, not BN running statistics)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one convolution or linear layer in a forward pass of one image."""

    name: str
    kind: str  # "conv", "depthwise", "pointwise" or "linear"
    output_shape: tuple[int, ...]
    params: int
    macs: int


def input_tensor(model: nn.Module, input_size: InputSize) -> torch.Tensor:
    """A zero batch of one image of ``input_size`` on ``model``'s device and dtype (checked)."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if not isinstance(input_size, tuple) or len(input_size) not in (2, 3) or not all(
        isinstance(v, int) and v > 0 for v in input_size
    ):
        raise ValueError(
            f"input_size must be an int, (H, W) or (C, H, W) of positive ints, got {input_size!r}"
        )
    if len(input_size) == 2:
        input_size = (getattr(model, "in_channels", 3),) + input_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    return torch.zeros((1,) + input_size, device=device, dtype=dtype)


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "linear"
    if m.groups > 1 and m.groups == m.in_channels:
        return "depthwise"
    if m.kernel_size == (1, 1):
        return "pointwise"
    return "conv"


def flop_breakdown(model: nn.Module, input_size: InputSize) -> list[LayerCost]:
    """Per-layer multiply-adds and parameters of one forward pass on a ``1 x C x H x W`` input.

    Runs the model once (in eval mode, without gradients) with hooks on every ``nn.Conv2d`` and
    ``nn.Linear``. A conv costs ``output elements * (C_in / groups) * k_h * k_w``; a linear layer
    ``output elements * in_features``. Layers used several times are listed each time.
    """
    x = input_tensor(model, input_size)
    names = {m: n for n, m in model.named_modules()}
    rows: list[LayerCost] = []

    def hook(m: nn.Module, inputs, output) -> None:
        if isinstance(m, nn.Linear):
            macs = output.numel() * m.in_features
        else:
            kh, kw = m.kernel_size
            macs = output.numel() * (m.in_channels // m.groups) * kh * kw
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append(LayerCost(names[m], _kind(m), tuple(output.shape[1:]), params, macs))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def count_flops(model: nn.Module, input_size: InputSize) -> int:
    """Multiply-adds (the unit the EfficientNet/EfficientDet papers call FLOPs) for one image.

    ``input_size`` is the side of a square image, ``(H, W)``, or ``(C, H, W)``.
    EfficientNet-B0 at 224 gives about 0.386 billion, the paper's 0.39B.
    """
    return sum(row.macs for row in flop_breakdown(model, input_size))
