"""EfficientNet B0-B8, L2 and Lite0-4: the stage table as data, the rounding rules, the model.

The B0 table is Table 1 of Tan & Le (2019), row for row. Every other member of the family is B0
with its channels multiplied by a width coefficient and its block counts by a depth coefficient,
rounded by :func:`round_filters` and :func:`round_repeats` (Sec. 3.3 and the reference code).

EfficientNet-Lite (Google's ``efficientnet/lite`` release, 2020) is the same network made for
mobile accelerators and 8-bit quantisation, and the differences are data, not another class: its
stage table has no squeeze-and-excitation (poorly supported on those accelerators), its
activation is ReLU6 (bounded, so it quantises well), and its stem, head and first and last
stages are not scaled (:data:`LITE_STAGES`, :data:`LITE_PRESETS`).

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .blocks import MBConv
from .layers import (
    BN_EPS_TF,
    BN_EPS_TORCH,
    BN_MOMENTUM_TORCH,
    Activation,
    ConvBnAct,
    PaddingMode,
    check_image_batch,
    check_padding,
    make_divisible,
)


@dataclass(frozen=True)
class StageSpec:
    """One row of EfficientNet's stage table (Tan & Le 2019, Table 1).

    Only the first block of a stage has the stride and changes the channel count.
    """

    expand_ratio: int  # MBConv1 or MBConv6
    kernel_size: int  # depthwise kernel
    stride: int  # stride of the first block
    out_channels: int
    repeats: int  # number of blocks
    se_ratio: float = 0.25
    scale_depth: bool = True  # False: the depth coefficient leaves this stage's block count alone


#: EfficientNet-B0, Table 1 of the paper, one row per stage (expand, kernel, stride, channels,
#: layers).
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1),  # stage 2 of the paper's table: 112x112
    StageSpec(6, 3, 2, 24, 2),  # 112 -> 56
    StageSpec(6, 5, 2, 40, 2),  # 56 -> 28   (stride 8: EfficientDet's P3)
    StageSpec(6, 3, 2, 80, 3),  # 28 -> 14
    StageSpec(6, 5, 1, 112, 3),  # 14        (stride 16: P4)
    StageSpec(6, 5, 2, 192, 4),  # 14 -> 7
    StageSpec(6, 3, 1, 320, 1),  # 7         (stride 32: P5)
)
B0_STEM_CHANNELS = 32
B0_HEAD_CHANNELS = 1280

#: EfficientNet-Lite's stage table, B0's without squeeze-and-excitation, and with the first and
#: last stages kept at one block whatever the depth coefficient (the reference's ``fix_head_stem``).
LITE_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1, se_ratio=0.0, scale_depth=False),
    StageSpec(6, 3, 2, 24, 2, se_ratio=0.0),
    StageSpec(6, 5, 2, 40, 2, se_ratio=0.0),
    StageSpec(6, 3, 2, 80, 3, se_ratio=0.0),
    StageSpec(6, 5, 1, 112, 3, se_ratio=0.0),
    StageSpec(6, 5, 2, 192, 4, se_ratio=0.0),
    StageSpec(6, 3, 1, 320, 1, se_ratio=0.0, scale_depth=False),
)
#: Indices of the stages whose outputs are the stride-8/16/32 feature maps.
FEATURE_STAGES: tuple[int, ...] = (2, 4, 6)


@dataclass(frozen=True)
class EfficientNetPreset:
    """A family member: the two coefficients and what the reference code trains it with.

    The last three fields are what a Lite member changes (the defaults are B0's).
    """

    width_mult: float
    depth_mult: float
    resolution: int
    dropout: float
    stages: tuple[StageSpec, ...] = B0_STAGES
    activation: Activation = "swish"
    fix_stem_head: bool = False  # True: stem (32) and head (1280) channels are not scaled


#: The reference code's table (``efficientnet_params``); B8 from AdvProp, L2 from Noisy Student.
PRESETS: dict[str, EfficientNetPreset] = {
    "b0": EfficientNetPreset(1.0, 1.0, 224, 0.2),
    "b1": EfficientNetPreset(1.0, 1.1, 240, 0.2),
    "b2": EfficientNetPreset(1.1, 1.2, 260, 0.3),
    "b3": EfficientNetPreset(1.2, 1.4, 300, 0.3),
    "b4": EfficientNetPreset(1.4, 1.8, 380, 0.4),
    "b5": EfficientNetPreset(1.6, 2.2, 456, 0.4),
    "b6": EfficientNetPreset(1.8, 2.6, 528, 0.5),
    "b7": EfficientNetPreset(2.0, 3.1, 600, 0.5),
    "b8": EfficientNetPreset(2.2, 3.6, 672, 0.5),
    "l2": EfficientNetPreset(4.3, 5.3, 800, 0.5),
}

#: EfficientNet-Lite0 to Lite4, the reference's ``efficientnet_lite_params`` (tensorflow/tpu,
#: ``models/official/efficientnet/lite/efficientnet_lite_builder.py``) with Lite's changes.
LITE_PRESETS: dict[str, EfficientNetPreset] = {
    "lite0": EfficientNetPreset(1.0, 1.0, 224, 0.2, LITE_STAGES, "relu6", fix_stem_head=True),
    "lite1": EfficientNetPreset(1.0, 1.1, 240, 0.2, LITE_STAGES, "relu6", fix_stem_head=True),
    "lite2": EfficientNetPreset(1.1, 1.2, 260, 0.3, LITE_STAGES, "relu6", fix_stem_head=True),
    "lite3": EfficientNetPreset(1.2, 1.4, 280, 0.3, LITE_STAGES, "relu6", fix_stem_head=True),
    "lite4": EfficientNetPreset(1.4, 1.8, 300, 0.3, LITE_STAGES, "relu6", fix_stem_head=True),
}


@dataclass(frozen=True)
class PublishedFigures:
    """Parameters and multiply-adds as a paper printed them (rounded there, not here)."""

    params_millions: float
    flops_billions: float
    source: str


#: Tan & Le (2019), Table 2 (ImageNet results; "FLOPs" are multiply-adds). B8 and L2 were
#: published without a FLOPs figure in that table and are left out.
PAPER_FIGURES: dict[str, PublishedFigures] = {
    v: PublishedFigures(p, f, "Tan & Le 2019, Table 2")
    for v, p, f in [("b0", 5.3, 0.39), ("b1", 7.8, 0.70), ("b2", 9.2, 1.0), ("b3", 12, 1.8),
                    ("b4", 19, 4.2), ("b5", 30, 9.9), ("b6", 43, 19), ("b7", 66, 37)]
}


#: Published ImageNet top-1 accuracy in percent (single crop) of the released checkpoints, B0-B7
#: from Tan & Le, arXiv:1905.11946 v5 (2020), Table 2 (the ICML 2019 version printed lower numbers
#: for the earlier checkpoints, B0 76.3 and B7 84.4); Lite0-4 (float32) from the table of the
#: Lite release (tensorflow/tpu, ``models/official/efficientnet/lite/README.md``).
PUBLISHED_TOP1: dict[str, tuple[float, str]] = {
    **{v: (acc, "Tan & Le 2019, arXiv v5, Table 2") for v, acc in [
        ("b0", 77.1), ("b1", 79.1), ("b2", 80.1), ("b3", 81.6), ("b4", 82.9), ("b5", 83.6),
        ("b6", 84.0), ("b7", 84.3)]},
    **{v: (acc, "EfficientNet-Lite README (tensorflow/tpu)") for v, acc in [
        ("lite0", 75.1), ("lite1", 76.7), ("lite2", 77.6), ("lite3", 79.8), ("lite4", 81.5)]},
}


def round_filters(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width_mult`` and round it to a multiple of ``divisor``.

    Rounds half up to the divisor, then adds one divisor if that lost more than 10% (the
    "10% rule"): B3's 16 * 1.2 = 19.2 would round to 16, which is below 17.28, so it becomes 24.
    """
    return make_divisible(channels * width_mult, divisor)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Scale a stage's block count by ``depth_mult``, rounding up (``ceil``)."""
    return int(math.ceil(depth_mult * repeats))


def scale_stages(
    stages: Sequence[StageSpec], width_mult: float, depth_mult: float, divisor: int = 8
) -> list[StageSpec]:
    """The stage table of a scaled network: widths by :func:`round_filters`, depths by
    :func:`round_repeats` (except in stages marked ``scale_depth=False``).
    """
    return [
        replace(s, out_channels=round_filters(s.out_channels, width_mult, divisor),
                repeats=round_repeats(s.repeats, depth_mult) if s.scale_depth else s.repeats)
        for s in stages
    ]


class EfficientNet(nn.Module):
    """EfficientNet: a stem, seven stages of MBConv blocks, a 1x1 head and a classifier.

    Args:
        width_mult, depth_mult: compound-scaling coefficients (1.0, 1.0 is B0).
        num_classes: classifier outputs; 0 returns the pooled features instead.
        dropout: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block; block ``i`` of ``N`` gets
            ``drop_path_rate * i / N`` (linear schedule, first block 0).
        padding: ``"symmetric"`` (PyTorch-trained weights) or ``"same"`` (TF-trained weights).
        bn_eps, bn_momentum: batch-norm constants: PyTorch's 1e-5 and 0.1 by default; TF-trained
            weights need eps 1e-3 (``layers.BN_EPS_TF``), and TF trained with decay 0.99, that
            is PyTorch momentum 0.01 (``layers.BN_MOMENTUM_TF``).
        in_channels: image channels.
        features_only: build no head or classifier; ``forward`` returns the stride-8/16/32 maps.
        stages: the unscaled stage table (B0's by default).
        stem_channels, head_channels: unscaled stem and head widths (B0's 32 and 1280); like the
            stages they are multiplied by ``width_mult`` and rounded, unless ``fix_stem_head``.
        activation: ``"swish"`` (EfficientNet) or ``"relu6"`` (Lite).
        fix_stem_head: keep the stem and head widths unscaled (Lite).
        channel_divisor: channels are rounded to multiples of this (8 in the reference; a
            smaller one lets tiny proxy networks scale their width smoothly).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        drop_path_rate: float = 0.2,
        padding: PaddingMode = "symmetric",
        bn_eps: float = BN_EPS_TORCH,
        bn_momentum: float = BN_MOMENTUM_TORCH,
        in_channels: int = 3,
        features_only: bool = False,
        stages: Sequence[StageSpec] = B0_STAGES,
        stem_channels: int = B0_STEM_CHANNELS,
        head_channels: int = B0_HEAD_CHANNELS,
        channel_divisor: int = 8,
        activation: Activation = "swish",
        fix_stem_head: bool = False,
    ) -> None:
        super().__init__()
        check_padding(padding)
        if width_mult <= 0 or depth_mult <= 0:
            raise ValueError(
                f"width_mult and depth_mult must be > 0, got {width_mult}, {depth_mult}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout and drop_path_rate must be in [0, 1), "
                             f"got {dropout}, {drop_path_rate}")
        self.in_channels = in_channels
        self.stage_specs = scale_stages(stages, width_mult, depth_mult, channel_divisor)
        bn = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum, activation=activation)
        stem_head_mult = 1.0 if fix_stem_head else width_mult

        stem_width = round_filters(stem_channels, stem_head_mult, channel_divisor)
        self.stem = ConvBnAct(in_channels, stem_width, 3, stride=2, **bn)

        total_blocks = sum(s.repeats for s in self.stage_specs)
        stages_list, channels, index = [], stem_width, 0
        for spec in self.stage_specs:
            blocks = []
            for j in range(spec.repeats):
                blocks.append(MBConv(
                    channels, spec.out_channels, spec.kernel_size,
                    stride=spec.stride if j == 0 else 1, expand_ratio=spec.expand_ratio,
                    se_ratio=spec.se_ratio, drop_path_rate=drop_path_rate * index / total_blocks,
                    **bn,
                ))
                channels, index = spec.out_channels, index + 1
            stages_list.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages_list)
        self.feature_channels: list[int] = [self.stage_specs[i].out_channels
                                            for i in FEATURE_STAGES]
        self.feature_strides: list[int] = [8, 16, 32]
        self.features_only = features_only

        self.num_features = round_filters(head_channels, stem_head_mult, channel_divisor)
        if features_only:
            self.head, self.dropout, self.classifier = None, None, None
        else:
            self.head = ConvBnAct(channels, self.num_features, 1, **bn)
            self.dropout = nn.Dropout(dropout)
            self.classifier = (nn.Linear(self.num_features, num_classes) if num_classes
                               else nn.Identity())
        init_weights(self)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of stages 3, 5 and 7: strides 8, 16 and 32 (EfficientDet's P3, P4, P5)."""
        check_image_batch(x, self.in_channels)
        x = self.stem(x)
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in FEATURE_STAGES:
                maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before pooling: stem, stages and the 1x1 head,
        ``(B, num_features, H/32, W/32)``.
        """
        if self.head is None:
            raise RuntimeError("a features_only model has no head: call feature_maps(x)")
        check_image_batch(x, self.in_channels)
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, num_classes)`` (the pooled ``(B, num_features)`` if ``num_classes=0``);
        with ``features_only``, the stride-8/16/32 maps of :meth:`feature_maps`.
        """
        if self.features_only:
            return self.feature_maps(x)
        x = self.forward_features(x).mean((2, 3))  # global average pooling: (B, num_features)
        return self.classifier(self.dropout(x))


def init_weights(model: nn.Module) -> None:
    """The reference initialisation (timm's ``_init_weight_goog``, TF's EfficientNet).

    Convolutions: normal with std ``sqrt(2 / fan_out)``, ``fan_out = k*k*out/groups``; BN weight 1,
    bias 0; linear: uniform in ``+-1/sqrt(out_features)``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def efficientnet(
    variant: str, tf_style: bool = False, num_classes: int = 1000, **options: Any
) -> EfficientNet:
    """Build a family member by its short name (``"b0"`` ... ``"b8"``, ``"l2"``, ``"lite0"`` ...
    ``"lite4"``).

    ``tf_style=True`` gives the TF-faithful variant (``"same"`` padding, BN eps 1e-3) that loads
    TF-trained weights. Like timm's ``tf_efficientnet_*`` it keeps PyTorch's BN momentum 0.1,
    which only matters in training: pass ``bn_momentum=layers.BN_MOMENTUM_TF`` (0.01, TF's decay
    0.99) to train with the reference's running averages. ``options`` override any
    :class:`EfficientNet` argument.
    """
    p = preset(variant)
    kwargs = dict(width_mult=p.width_mult, depth_mult=p.depth_mult, dropout=p.dropout,
                  num_classes=num_classes, stages=p.stages, activation=p.activation,
                  fix_stem_head=p.fix_stem_head)
    if tf_style:
        kwargs.update(padding="same", bn_eps=BN_EPS_TF)
    kwargs.update(options)
    return EfficientNet(**kwargs)


def preset(variant: str) -> EfficientNetPreset:
    """The preset of a family member, B0-L2 (:data:`PRESETS`) or Lite (:data:`LITE_PRESETS`)."""
    if variant in PRESETS:
        return PRESETS[variant]
    if variant in LITE_PRESETS:
        return LITE_PRESETS[variant]
    raise ValueError(f"unknown EfficientNet variant {variant!r}; valid: "
                     f"{sorted(PRESETS) + sorted(LITE_PRESETS)}")


def native_resolution(variant: str) -> int:
    """The input size a family member was designed for (224 for B0 ... 600 for B7; 224 to 300
    for Lite0 to Lite4).
    """
    return preset(variant).resolution


__all__ = [
    "B0_STAGES", "FEATURE_STAGES", "LITE_PRESETS", "LITE_STAGES", "PAPER_FIGURES", "PRESETS",
    "PUBLISHED_TOP1",
    "PublishedFigures", "EfficientNet", "EfficientNetPreset", "StageSpec", "efficientnet",
    "init_weights", "native_resolution", "preset", "round_filters", "round_repeats",
    "scale_stages",
]
