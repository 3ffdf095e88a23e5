"""Opt-in model transforms: fused conv+BN, a memory-efficient swish, channels_last, compile, AMP.

None of these change what the models compute (up to float rounding); each trades generality for
speed or memory, so each is applied by an explicit call and the book measures what it buys
(``benchmarks/bench.py``):

* :func:`fuse_conv_bn` (inference): fold every batch norm that directly follows a convolution
  into that convolution's weights and bias, ``W' = W * g / sqrt(v + eps)``,
  ``b' = (b - m) * g / sqrt(v + eps) + beta``; one pass over memory fewer per layer.
* :class:`MemoryEfficientSwish` (training): ``x * sigmoid(x)`` as one autograd function that
  saves only its input and recomputes the sigmoid in backward.
* :func:`to_channels_last`: NHWC memory layout, which oneDNN on CPU and tensor cores on GPU
  prefer for convolutions.
* :func:`maybe_compile`: ``torch.compile`` when it works, the eager model otherwise.
* :func:`autocast`: mixed precision (bfloat16 on CPU, float16 on CUDA).

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

from ..layers import DepthwiseSeparableConv2d


# --------------------------------------------------------------------------- conv + BN folding
@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode ``bn`` into ``conv`` in place (adding a bias if needed); returns ``conv``.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)
    return conv


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each ``conv -> bn`` pair folded into the conv.

    Folds every module that holds a ``conv`` (a ``Conv2d``, or a depthwise separable conv whose
    ``pointwise`` feeds the BN) and a ``bn`` it applies right after: ``ConvBnAct`` (stem, MBConv,
    head), the BiFPN's resampling and node convolutions. The detection heads keep their BNs:
    there one convolution is shared by five levels, each with its own BN, so no single fused
    weight exists. Only for inference: the fused copy has no batch statistics to train.
    """
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        if isinstance(conv, DepthwiseSeparableConv2d):
            conv = conv.pointwise
        if isinstance(conv, nn.Conv2d):
            fold_bn_into_conv(conv, bn)
            m.bn = nn.Identity()
    return fused


# --------------------------------------------------------------------------- swish
class _SwishFunction(torch.autograd.Function):
    """``x * sigmoid(x)``; saves ``x`` only, recomputes ``sigmoid(x)`` in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))  # d/dx x*s = s + x*s*(1-s)


def memory_efficient_swish(x: torch.Tensor) -> torch.Tensor:
    """Swish/SiLU as one autograd function that saves only ``x`` for backward."""
    return _SwishFunction.apply(x)


class MemoryEfficientSwish(nn.Module):
    """Module form of :func:`memory_efficient_swish`, a drop-in for ``nn.SiLU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _SwishFunction.apply(x)


def use_memory_efficient_swish(model: nn.Module) -> nn.Module:
    """Replace every ``nn.SiLU`` of ``model`` by :class:`MemoryEfficientSwish`, in place.

    Returns ``model``. The outputs and gradients are those of SiLU (to float rounding).
    """
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.SiLU):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, MemoryEfficientSwish())
    return model


# --------------------------------------------------------------------------- layout, compile, AMP
def to_channels_last(model: nn.Module) -> nn.Module:
    """Store ``model``'s 4-D weights as NHWC (``torch.channels_last``), in place; returns it.

    Feed it channels-last inputs too: ``x.to(memory_format=torch.channels_last)``.
    """
    return model.to(memory_format=torch.channels_last)


def maybe_compile(model: nn.Module, enabled: bool = True, **options) -> nn.Module:
    """``torch.compile(model, **options)`` when possible, else ``model`` with a warning.

    Compilation is lazy: the first call pays for it (tens of seconds to minutes on a CPU), and a
    new input shape compiles again. Call once on a representative input before timing.
    """
    if not enabled:
        return model
    try:
        return torch.compile(model, **options)
    except Exception as err:  # pragma: no cover - depends on the platform
        warnings.warn(f"torch.compile unavailable ({err}); running eagerly", stacklevel=2)
        return model


def autocast(device: torch.device | str, enabled: bool = True,
             dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
    """Mixed precision for ``device``: float16 on CUDA, bfloat16 on CPU (unless ``dtype``)."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def optimize_for_inference(model: nn.Module, fuse: bool = True, channels_last: bool = False,
                           compile: bool = False) -> nn.Module:
    """The inference path in one call: an eval-mode copy, fused, optionally NHWC and compiled.

    On a GPU add :func:`autocast` around the call. The original model is untouched.
    """
    fast = fuse_conv_bn(model) if fuse else copy.deepcopy(model).eval()
    if channels_last:
        to_channels_last(fast)
    return maybe_compile(fast, enabled=compile)


__all__ = ["MemoryEfficientSwish", "autocast", "fold_bn_into_conv", "fuse_conv_bn",
           "maybe_compile", "memory_efficient_swish", "optimize_for_inference",
           "to_channels_last", "use_memory_efficient_swish"]
