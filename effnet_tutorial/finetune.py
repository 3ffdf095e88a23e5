"""Freezing part of a network for fine-tuning: no gradients, and batch norm that stops learning.

Setting ``requires_grad=False`` stops a layer's weights, but not its batch norms: in training
mode a ``BatchNorm2d`` still replaces its running mean and variance by those of each new batch,
so a "frozen" backbone would drift towards the new data's statistics. :func:`freeze` therefore
also swaps every batch norm for :class:`FrozenBatchNorm2d`, which applies the stored statistics
as a fixed affine map in training and at inference alike (torchvision and detectron2 do the
same for their detection backbones).

In the book: Chapter 15, *Fine-tuning and scaling up*.
"""
from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: ``y = (x - mean) / sqrt(var + eps)
    * weight + bias``, the same in training and evaluation; all four are buffers, not parameters.
    """

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.eps = bn.eps
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, getattr(bn, name).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # (C,)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.weight.numel()}, eps={self.eps}"


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no parameter needs a gradient and every ``BatchNorm2d`` becomes
    a :class:`FrozenBatchNorm2d` with its current statistics. Returns ``module``.

    ``freeze(model.backbone)`` trains only the BiFPN and the heads of a detector.
    """
    if isinstance(module, nn.BatchNorm2d):
        raise ValueError("freeze() swaps the batch norms inside a module; pass the module that "
                         "holds this BatchNorm2d")
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child))
        else:
            freeze(child)
    for p in module.parameters(recurse=False):
        p.requires_grad_(False)
    return module


def count_trainable(module: nn.Module) -> int:
    """The number of parameters of ``module`` that receive gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["FrozenBatchNorm2d", "count_trainable", "freeze"]
