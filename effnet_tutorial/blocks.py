"""MBConv, EfficientNet's building block, and squeeze-and-excitation.

MBConv is MobileNet V2's inverted residual with a linear bottleneck (Sandler et al. 2018),
with a squeeze-and-excitation gate (Hu et al. 2018) and swish activations (Tan & Le 2019, Sec. 4):

    x -> [expand 1x1 -> BN -> swish] -> depthwise kxk -> BN -> swish -> SE -> project 1x1 -> BN
      -> (+ x, through stochastic depth, when stride 1 and in == out)

In the book: Chapter 3, *MBConv and squeeze-and-excitation*.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import (
    BN_EPS_TORCH,
    BN_MOMENTUM_TORCH,
    Activation,
    ConvBnAct,
    DropPath,
    PaddingMode,
    make_activation,
)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: reweight channels by a gate computed from their global means.

    ``s = sigmoid(W2 swish(W1 mean_hw(x) + b1) + b2)``, output ``x * s`` (Hu et al. 2018, eq. 2-3,
    with EfficientNet's swish in place of ReLU). ``W1`` and ``W2`` are 1x1 convolutions with bias,
    named ``reduce`` and ``expand``.
    """

    def __init__(self, channels: int, reduced_channels: int, activation: Activation = "swish") -> None:
        super().__init__()
        if reduced_channels < 1:
            raise ValueError(f"reduced_channels must be >= 1, got {reduced_channels}")
        self.reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1): squeeze
        s = self.gate(self.expand(self.act(self.reduce(s))))  # (B, C, 1, 1): excite
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (EfficientNet's MBConv1/MBConv6).

    Args:
        in_channels, out_channels: channels entering and leaving the block.
        kernel_size: the depthwise kernel (3 or 5 in EfficientNet).
        stride: the depthwise stride (1 or 2).
        expand_ratio: the hidden width is ``in_channels * expand_ratio``; with 1 there is no
            expansion conv (MBConv1, EfficientNet's first stage).
        se_ratio: squeeze width as a fraction of the *block input* channels (0.25), the rule of
            the reference code; 0 disables SE.
        drop_path_rate: stochastic-depth rate of the residual branch.
        padding, bn_eps, bn_momentum: the faithful-variant options (see ``layers``).
        activation: ``"swish"``, or ``"relu6"`` for the Lite variants.

    Submodules ``expand`` (absent when ``expand_ratio == 1``), ``depthwise``, ``se``, ``project``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: int = 6,
        se_ratio: float = 0.25,
        drop_path_rate: float = 0.0,
        padding: PaddingMode = "symmetric",
        bn_eps: float = BN_EPS_TORCH,
        bn_momentum: float = BN_MOMENTUM_TORCH,
        activation: Activation = "swish",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride}")
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1, got {expand_ratio}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.expand_ratio = kernel_size, stride, expand_ratio
        hidden = in_channels * expand_ratio
        # expand: 1x1 conv to the wide hidden space (skipped for MBConv1)
        act = dict(activation=activation)
        self.expand = ConvBnAct(in_channels, hidden, 1, **bn, **act) if expand_ratio != 1 else None
        # depthwise: one kxk filter per channel, carries the stride
        self.depthwise = ConvBnAct(hidden, hidden, kernel_size, stride, groups=hidden, **bn, **act)
        # squeeze and excitation: width from the block input, as in the reference code
        self.se = (SqueezeExcite(hidden, max(1, int(in_channels * se_ratio)), **act)
                   if se_ratio > 0 else None)
        # project: linear 1x1 bottleneck, no activation
        self.project = ConvBnAct(hidden, out_channels, 1, act=False, **bn)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.expand(x) if self.expand is not None else x  # (B, C*e, H, W)
        y = self.depthwise(y)  # (B, C*e, H/s, W/s)
        if self.se is not None:
            y = self.se(y)  # channels reweighted, same shape
        y = self.project(y)  # (B, C_out, H/s, W/s)
        if self.has_skip:
            y = self.drop_path(y) + x
        return y
