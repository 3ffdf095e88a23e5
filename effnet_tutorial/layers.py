"""Convolution building blocks shared by every model in the book.

* :func:`same_padding` and :class:`Conv2dSame`: TensorFlow's ``"SAME"`` padding, which the
  TF-trained checkpoints need (asymmetric: the extra pixel goes to the bottom/right).
* :func:`create_conv2d`: one constructor that picks symmetric (PyTorch-style) or ``"same"``
  (TF-style) padding, so the two faithful variants of every model differ by one option.
* :class:`ConvBnAct`: convolution, batch norm and an optional activation, the unit of every stem,
  MBConv and head.
* :class:`DepthwiseSeparableConv2d`: a depthwise convolution followed by a pointwise one
  (MobileNet V1), the subject of Chapter 2.
* :class:`DropPath`: stochastic depth, one Bernoulli draw per sample (Chapter 3).
* The batch-norm constants of the two conventions (:data:`BN_EPS_TORCH`, :data:`BN_MOMENTUM_TORCH`,
  :data:`BN_EPS_TF`, :data:`BN_DECAY_TF`, :data:`BN_MOMENTUM_TF`), named so that no model
  carries them as bare numbers.

In the book: Chapter 2, *Depthwise separable convolutions*.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PaddingMode = Literal["symmetric", "same"]
PADDING_MODES: tuple[str, ...] = ("symmetric", "same")
#: The activations the models use, swish (EfficientNet, EfficientDet) and ReLU6 (the Lite
#: variants, whose bounded outputs quantise well to 8 bits).
Activation = Literal["swish", "relu6"]

#: PyTorch's ``nn.BatchNorm2d`` defaults, which PyTorch-trained EfficientNets keep.
BN_EPS_TORCH: float = 1e-5
#: PyTorch's momentum is the weight of the *new* batch statistic in the running average.
BN_MOMENTUM_TORCH: float = 0.1
#: The reference TensorFlow code's epsilon (``batch_norm_epsilon=1e-3``); TF-trained weights need it.
BN_EPS_TF: float = 1e-3
#: TensorFlow's ``momentum``/decay (0.99) is the weight of the *old* running average ...
BN_DECAY_TF: float = 0.99
#: ... so TF's decay 0.99 is PyTorch's momentum ``1 - 0.99 = 0.01``.
BN_MOMENTUM_TF: float = round(1.0 - BN_DECAY_TF, 10)


def make_activation(name: Activation) -> nn.Module:
    """A fresh in-place activation module: ``"swish"`` (``nn.SiLU``) or ``"relu6"`` (``nn.ReLU6``).
    """
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"activation must be 'swish' or 'relu6', got {name!r}")


def check_padding(padding: str) -> None:
    """Raise a ``ValueError`` unless ``padding`` is one of ``PADDING_MODES``."""
    if padding not in PADDING_MODES:
        raise ValueError(
            f"padding must be one of {PADDING_MODES}, got {padding!r}: 'symmetric' is PyTorch-style "
            "padding (timm efficientnet_*), 'same' is TensorFlow's SAME padding (tf_efficientnet_*)."
        )


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding along one axis, as ``(before, after)``.

    SAME makes the output ``ceil(size / stride)`` long. The total padding that needs is split with
    the smaller half first, so a stride-2 3x3 conv on an even input pads ``(0, 1)``, where
    PyTorch's symmetric ``padding=1`` pads ``(1, 1)``: same output size, grid shifted by a pixel.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def symmetric_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """PyTorch-style padding on both sides (timm's ``get_padding``): ``((s-1) + d(k-1)) // 2``."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class Conv2dSame(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that pads like TensorFlow's ``"SAME"`` for any input size.

    The padding depends on the input size, so it is computed in ``forward`` (the weights and
    the state dict are those of a plain ``Conv2d`` with ``padding=0``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def create_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: PaddingMode = "symmetric",
) -> nn.Conv2d:
    """A 2-D convolution that keeps ``ceil(size / stride)`` outputs with the chosen padding style.

    With ``padding="same"``, convolutions whose SAME padding is symmetric anyway (stride 1, odd
    kernel) use a plain ``nn.Conv2d``; only the others pay for :class:`Conv2dSame`'s dynamic pad.
    """
    check_padding(padding)
    if padding == "same" and (stride > 1 or kernel_size % 2 == 0):
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)
    pad = symmetric_padding(kernel_size, stride)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=bias)


class ConvBnAct(nn.Module):
    """Convolution -> BatchNorm -> activation (swish unless ``activation`` says otherwise).

    ``act=False`` leaves the activation out, as in MBConv's linear projection.
    Submodules are named ``conv``, ``bn`` and ``act``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        padding: PaddingMode = "symmetric",
        bn_eps: float = BN_EPS_TORCH,
        bn_momentum: float = BN_MOMENTUM_TORCH,
        activation: Activation = "swish",
    ) -> None:
        super().__init__()
        self.conv = create_conv2d(in_channels, out_channels, kernel_size, stride, groups, False, padding)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act: nn.Module = make_activation(activation) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv2d(nn.Module):
    """A depthwise ``k x k`` convolution (one filter per channel) then a pointwise ``1 x 1`` one.

    It replaces a standard convolution's ``k*k*C_in*C_out`` weights by ``k*k*C_in + C_in*C_out``
    (MobileNet V1, Howard et al. 2017, Sec. 3.1). Submodules: ``depthwise``, ``pointwise``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        padding: PaddingMode = "symmetric",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depthwise = create_conv2d(
            in_channels, in_channels, kernel_size, stride, groups=in_channels, padding=padding
        )
        self.pointwise = create_conv2d(in_channels, out_channels, 1, bias=bias, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.pointwise(self.depthwise(x))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``.

    Survivors are scaled by ``1 / (1 - rate)`` so the expected value is unchanged and evaluation
    needs no rescaling (Huang et al. 2016; timm's ``drop_path``).
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    # Scale the (B, 1, 1, 1) mask, not the activation: one full-size multiply, not two.
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`, so the rate shows in ``print(model)``."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:  # noqa: D102
        return f"rate={self.rate:g}"


def check_image_batch(x: torch.Tensor, channels: int, what: str = "input") -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a float ``(B, channels, H, W)`` batch."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{what} must have shape (B, C, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{what} has {x.shape[1]} channels, the model expects {channels}: shape {tuple(x.shape)}"
            + (" (channels-last? use x.permute(0, 3, 1, 2))" if x.shape[-1] == channels else "")
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got {x.dtype} (normalise images first)")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never losing more than 10%.

    This is EfficientNet's ``round_filters`` rule (also MobileNet V2's ``_make_divisible``):
    round half up to a multiple of ``divisor``; if that drops below 90% of ``value``, add one
    ``divisor``.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new
