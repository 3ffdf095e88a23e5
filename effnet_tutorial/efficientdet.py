"""EfficientDet D0-D7 and Lite0-4: EfficientNet backbone, BiFPN, and class/box heads shared
across levels.

Tan, Pang & Le (2020), Sec. 3-4 and Table 1. The D0-D7 table is data (:data:`DETECTOR_PRESETS`),
row for row the reference code's configurations (effdet's ``model_config.py``, automl's
``hparams_config.py``), including the details the paper's formulas do not say: D5 runs at 1280
with 7 BiFPN layers, D6 and D7 fuse by plain sum, D7 uses anchor scale 5, D7x adds P8.

In the book: Chapter 12, *EfficientDet D0–D7*.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .anchors import ASPECT_RATIOS
from .bifpn import BiFpn, glorot_uniform_
from .data.transforms import ImageLike
from .efficientnet import EfficientNet, efficientnet, init_weights
from .inference import predict
from .layers import (
    Activation,
    DepthwiseSeparableConv2d,
    PaddingMode,
    check_image_batch,
    make_activation,
)


@dataclass(frozen=True)
class DetectorConfig:
    """One row of the EfficientDet table, plus the options that make a variant faithful."""

    backbone: str  # e.g. "b0"
    image_size: int
    fpn_channels: int  # BiFPN width
    fpn_repeats: int  # BiFPN depth (layers)
    head_repeats: int  # class/box head depth
    anchor_scale: float = 4.0
    max_level: int = 7
    fusion: str = "fastattn"
    tf_backbone: bool = True  # tf_efficientnet_* ("same" padding, BN eps 1e-3) or efficientnet_*
    padding: PaddingMode = "same"  # padding of the BiFPN and heads
    redundant_bias: bool = True  # TF's conv biases in front of batch norm
    backbone_drop_path: float = 0.2
    min_level: int = 3
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ASPECT_RATIOS
    url: str = ""  # released checkpoint (effdet), "" when none
    activation: Activation = "swish"  # of the BiFPN and the heads ("relu6" in the Lite detectors)

    @property
    def num_anchors(self) -> int:
        """The number of anchors at each location, scales times aspect ratios (9)."""
        return self.num_scales * len(self.aspect_ratios)


#: Where effdet's released checkpoints live; every ``url`` below is this plus a file name.
_RELEASES = "https://github.com/rwightman/efficientdet-pytorch/releases/download/v0.1/"

#: Every detector :func:`~effnet_tutorial.create_model` builds, named as effdet names them. The
#: first five fields are the paper's table: backbone, image size, BiFPN width, BiFPN depth, head
#: depth; keywords are only where a model differs from the :class:`DetectorConfig` defaults.
DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    # TF-trained D0-D7x (automl's ``hparams_config.py``, effdet's ``config/model_config.py``):
    # tf_efficientnet backbones, "same" padding, redundant biases. What Table 1's formulas do not
    # say: D5 runs at 1280 with 7 BiFPN layers, D6-D7x fuse by plain sum, D7 uses anchor scale 5,
    # D7x is D7 on a B7 backbone with one more level, P8.
    "tf_efficientdet_d0": DetectorConfig("b0", 512, 64, 3, 3,
                                         url=_RELEASES + "tf_efficientdet_d0_34-f153e0cf.pth"),
    "tf_efficientdet_d1": DetectorConfig("b1", 640, 88, 4, 3,
                                         url=_RELEASES + "tf_efficientdet_d1_40-a30f94af.pth"),
    "tf_efficientdet_d2": DetectorConfig("b2", 768, 112, 5, 3,
                                         url=_RELEASES + "tf_efficientdet_d2_43-8107aa99.pth"),
    "tf_efficientdet_d3": DetectorConfig("b3", 896, 160, 6, 4,
                                         url=_RELEASES + "tf_efficientdet_d3_47-0b525f35.pth"),
    "tf_efficientdet_d4": DetectorConfig("b4", 1024, 224, 7, 4,
                                         url=_RELEASES + "tf_efficientdet_d4_49-f56376d9.pth"),
    "tf_efficientdet_d5": DetectorConfig("b5", 1280, 288, 7, 4,
                                         url=_RELEASES + "tf_efficientdet_d5_51-c79f9be6.pth"),
    "tf_efficientdet_d6": DetectorConfig("b6", 1280, 384, 8, 5, fusion="sum",
                                         url=_RELEASES + "tf_efficientdet_d6_52-4eda3773.pth"),
    "tf_efficientdet_d7": DetectorConfig("b6", 1536, 384, 8, 5, fusion="sum", anchor_scale=5.0,
                                         url=_RELEASES + "tf_efficientdet_d7_53-6d1d7a95.pth"),
    "tf_efficientdet_d7x": DetectorConfig("b7", 1536, 384, 8, 5, fusion="sum", max_level=8,
                                          url=_RELEASES + "tf_efficientdet_d7x-f390b87c.pth"),
    # EfficientDet-Lite (automl's efficientdet, 2021; effdet's ``config/model_config.py``):
    # EfficientNet-Lite backbones, ReLU6 everywhere, plain-sum fusion, smaller inputs, anchor
    # scale 3 except Lite3 and Lite4; Lite0's backbone trains without stochastic depth.
    "tf_efficientdet_lite0": DetectorConfig("lite0", 320, 64, 3, 3, fusion="sum",
                                            activation="relu6", anchor_scale=3.0,
                                            backbone_drop_path=0.0,
                                            url=_RELEASES + "tf_efficientdet_lite0-dfacfc78.pth"),
    "tf_efficientdet_lite1": DetectorConfig("lite1", 384, 88, 4, 3, fusion="sum",
                                            activation="relu6", anchor_scale=3.0,
                                            url=_RELEASES + "tf_efficientdet_lite1-6dc7ab30.pth"),
    "tf_efficientdet_lite2": DetectorConfig("lite2", 448, 112, 5, 3, fusion="sum",
                                            activation="relu6", anchor_scale=3.0,
                                            url=_RELEASES + "tf_efficientdet_lite2-86c5d55b.pth"),
    "tf_efficientdet_lite3": DetectorConfig("lite3", 512, 160, 6, 4, fusion="sum",
                                            activation="relu6",
                                            url=_RELEASES + "tf_efficientdet_lite3-506852cb.pth"),
    "tf_efficientdet_lite3x": DetectorConfig("lite3", 640, 200, 6, 4, fusion="sum",
                                             activation="relu6", anchor_scale=3.0,
                                             url=_RELEASES + "tf_efficientdet_lite3x-8404c57b.pth"),
    "tf_efficientdet_lite4": DetectorConfig("lite4", 640, 224, 7, 4, fusion="sum",
                                            activation="relu6",
                                            url=_RELEASES + "tf_efficientdet_lite4-391ddabc.pth"),
    # PyTorch-trained variants (effdet's ``config/model_config.py``): the table of the TF-trained
    # D0-D5 on timm's efficientnet_* backbones (tf_backbone=False). D0-D3 drop the redundant
    # biases and use symmetric padding; effdet's D4/D5 configs keep its defaults ("same", biases).
    # Only D0 and D1 have released weights; D0's backbone trains with drop path 0.1.
    "efficientdet_d0": DetectorConfig("b0", 512, 64, 3, 3, tf_backbone=False,
                                      padding="symmetric", redundant_bias=False,
                                      backbone_drop_path=0.1,
                                      url=_RELEASES + "efficientdet_d0-f3276ba8.pth"),
    "efficientdet_d1": DetectorConfig("b1", 640, 88, 4, 3, tf_backbone=False,
                                      padding="symmetric", redundant_bias=False,
                                      url=_RELEASES + "efficientdet_d1-bb7e98fe.pth"),
    "efficientdet_d2": DetectorConfig("b2", 768, 112, 5, 3, tf_backbone=False,
                                      padding="symmetric", redundant_bias=False),
    "efficientdet_d3": DetectorConfig("b3", 896, 160, 6, 4, tf_backbone=False,
                                      padding="symmetric", redundant_bias=False),
    "efficientdet_d4": DetectorConfig("b4", 1024, 224, 7, 4, tf_backbone=False),
    "efficientdet_d5": DetectorConfig("b5", 1280, 288, 7, 4, tf_backbone=False),
}


class DetectionHead(nn.Module):
    """Class or box prediction head, shared by all pyramid levels.

    ``repeats`` times: separable 3x3 conv (weights shared across levels) -> BN (one per level:
    statistics differ between levels) -> swish (or ReLU6); then a separable 3x3 conv predicting
    ``num_anchors * num_outputs`` channels. Output ``(B, A*K, H, W)`` per level, channel
    ``a*K + k`` for anchor ``a`` and output ``k``.
    """

    def __init__(self, channels: int, num_outputs: int, num_anchors: int, repeats: int,
                 num_levels: int, padding: PaddingMode = "same", bias: bool = True,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 activation: Activation = "swish") -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.convs = nn.ModuleList([
            DepthwiseSeparableConv2d(channels, channels, 3, bias=bias, padding=padding)
            for _ in range(repeats)
        ])
        self.bns = nn.ModuleList([
            nn.ModuleList([nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
                           for _ in range(num_levels)])
            for _ in range(repeats)
        ])
        self.act = make_activation(activation)
        self.predict = DepthwiseSeparableConv2d(channels, num_anchors * num_outputs, 3, bias=True,
                                                padding=padding)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        outputs = []
        for level, x in enumerate(features):
            for conv, bns in zip(self.convs, self.bns):
                x = self.act(bns[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs


#: Prior probability of foreground at initialisation (RetinaNet Sec. 4.1), giving the bias
#: -log((1-p)/p).
PRIOR_PROBABILITY = 0.01


class EfficientDet(nn.Module):
    """EfficientDet: backbone P3-P5 -> BiFPN P3-P7 -> class and box heads.

    ``forward(images)`` returns ``(class_outputs, box_outputs)``: per level, raw logits
    ``(B, A*num_classes, H_l, W_l)`` and box codes ``(B, A*4, H_l, W_l)`` in the order
    ``[ty, tx, th, tw]`` (the reference's, so its weights load). Images are normalised float
    ``(B, 3, H, W)``, finite (NaN or inf raise ``ValueError``); any size works, also sizes that
    are not multiples of 128 (feature maps halve with ceil down to 1x1), but the preset's size is
    the one the anchors and the released weights were designed for.
    """

    def __init__(self, config: DetectorConfig, num_classes: int = 90) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config, self.num_classes = config, num_classes
        self.backbone: EfficientNet = efficientnet(
            config.backbone, tf_style=config.tf_backbone, features_only=True,
            drop_path_rate=config.backbone_drop_path)
        head = dict(padding=config.padding, bias=config.redundant_bias,
                    activation=config.activation)
        self.fpn = BiFpn(self.backbone.feature_channels, config.fpn_channels, config.fpn_repeats,
                         config.min_level, config.max_level, config.fusion, **head)
        num_levels = config.max_level - config.min_level + 1
        self.class_head = DetectionHead(config.fpn_channels, num_classes, config.num_anchors,
                                        config.head_repeats, num_levels, **head)
        self.box_head = DetectionHead(config.fpn_channels, 4, config.num_anchors,
                                      config.head_repeats, num_levels, **head)
        self.init_weights()

    def init_weights(self) -> None:
        """The reference initialisation: timm's for the backbone, TF's for the rest.

        BiFPN convs: glorot uniform; head convs: normal with std ``sqrt(1/fan_in)``; the class
        predictor's bias at the prior ``-log((1 - 0.01) / 0.01)`` so that every anchor starts
        as background with probability 0.99 and the focal loss starts small.
        """
        init_weights(self.backbone)
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                glorot_uniform_(m.weight, m.groups)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in (self.class_head, self.box_head):
            reset_head(head, prior=head is self.class_head)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # noqa: D102
        check_image_batch(images, 3, "images")
        if images.device.type != "meta" and not torch.isfinite(images).all():
            raise ValueError(
                "images contain NaN or infinite values (check the data and its normalisation)")
        features = self.fpn(self.backbone.feature_maps(images))
        return self.class_head(features), self.box_head(features)

    def predict(self, images: ImageLike | Sequence[ImageLike],
                **options: Any) -> list[dict[str, torch.Tensor]]:
        """Detections for images of any size, boxes **xyxy in each image's own pixels**.

        ``images``: one image or a list, each ``(3, H, W)`` or ``(H, W, 3)``, uint8 or 0-255
        float. Returns per image ``{"boxes", "scores", "labels"}`` (labels 0-based). See
        :func:`effnet_tutorial.inference.predict` for the options.
        """
        return predict(self, images, **options)


def reset_head(head: DetectionHead, prior: bool) -> None:
    """(Re-)initialise a head as the reference does; ``prior`` sets the class bias to the prior."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight.shape[1] * m.weight[0][0].numel()
            nn.init.normal_(m.weight, 0.0, math.sqrt(1.0 / max(1.0, fan_in)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if prior:
        nn.init.constant_(head.predict.pointwise.bias,
                          -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))


def efficientdet(name: str, num_classes: int = 90, **overrides: Any) -> EfficientDet:
    """Build a detector by its effdet name; ``overrides`` replace fields of its
    :class:`DetectorConfig`.
    """
    if name not in DETECTOR_PRESETS:
        raise ValueError(f"unknown detector {name!r}; valid: {sorted(DETECTOR_PRESETS)}")
    config = DETECTOR_PRESETS[name]
    fields = DetectorConfig.__dataclass_fields__
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {sorted(fields)}")
    return EfficientDet(replace(config, **overrides), num_classes)

