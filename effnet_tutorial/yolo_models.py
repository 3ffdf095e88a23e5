"""YOLOv4-CSP, YOLOv4-P5/P6/P7 and YOLOv4-tiny, built from their published layouts.

The layouts are data, one row per model, transcribed from the authors' configurations
(``yolov4-csp.yaml``, ``yolov4-p5.yaml``, ``yolov4-p6.yaml``, ``yolov4-p7.yaml`` of
WongKinYiu/ScaledYOLOv4 and ``cfg/yolov4-tiny.cfg``) and Sec. 4 of Wang, Bochkovskiy & Liao
(2021). A large model is a CSPDarknet backbone (a 3x3 stem, then per stage a stride-2 3x3 and a
CSP stage), a CSP-ized PAN neck with SPPCSP on the deepest map, and a YOLO head per level.

Two naming warnings. "P5", "P6", "P7" are *model* names here (YOLOv4-P5 predicts from levels P3 to
P5, P6 adds level P6, and so on), while elsewhere in the book P3-P7 are feature *levels*. And the
width multiplier of YOLOv4-P7 (1.25) is the released configuration's ``width_multiple``.

In the book: Chapter 8, *Scaled-YOLOv4: scaling beyond d, w, r*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .counting import count_flops, count_parameters
from .yolo_blocks import (
    SPPCSP,
    BottleneckCSP,
    ConvBNAct,
    CSPReversedDarkLayer,
    DarkBottleneck,
    PartialBlock,
    ReversedDarkLayer,
    SPPBlock,
    YOLOHead,
)

#: Backbone stage widths before the width multiplier (stage i has STAGE_WIDTHS[i]).
STAGE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024, 1024)
#: The stem's width before the width multiplier.
STEM_WIDTH = 32
#: The widest neck level (top of the PAN) before the width multiplier.
NECK_MAX_WIDTH = 512


@dataclass(frozen=True)
class YoloLayout:
    """One model of the family: what the configuration file fixes.

    ``blocks`` are Darknet blocks per backbone stage (the stage count is ``len(blocks)``, and
    levels P3 up to P``len(blocks)`` are predicted); ``plain_first_stage`` replaces the first CSP
    stage by one plain Darknet block (YOLOv4-CSP); ``neck_blocks`` are the Darknet blocks of each
    computation list of the PAN; ``width`` is the width multiplier; ``anchors`` per level.
    """

    name: str
    input_size: int
    blocks: tuple[int, ...]
    plain_first_stage: bool
    neck_blocks: int
    width: float = 1.0
    anchors: int = 4

    @property
    def levels(self) -> tuple[int, ...]:
        """The pyramid levels the head predicts from, 3 up to the number of stages."""
        return tuple(range(3, len(self.blocks) + 1))


#: The published layouts. YOLOv4-CSP has stages 1-2-8-8-4 with the first one plain
#: (yolov4-csp.yaml and the paper's Sec. 4.1); YOLOv4-large has stages 1-3-15-15-7-7-7, P5 using
#: the first five, P6 six and P7 seven, P7 with width multiplier 1.25 (yolov4-p5/p6/p7.yaml and
#: Sec. 4.3).
LAYOUTS: dict[str, YoloLayout] = {
    "YOLOv4-CSP": YoloLayout("YOLOv4-CSP", 512, (1, 2, 8, 8, 4), True, 2, anchors=3),
    "YOLOv4-P5": YoloLayout("YOLOv4-P5", 896, (1, 3, 15, 15, 7), False, 3),
    "YOLOv4-P6": YoloLayout("YOLOv4-P6", 1280, (1, 3, 15, 15, 7, 7), False, 3),
    "YOLOv4-P7": YoloLayout("YOLOv4-P7", 1536, (1, 3, 15, 15, 7, 7, 7), False, 3, width=1.25),
}


def scaled_width(channels: int, multiplier: float) -> int:
    """``channels * multiplier`` rounded up to a multiple of 8 (the YOLO code's
    ``make_divisible``)."""
    return math.ceil(channels * multiplier / 8) * 8


def layout(name: str) -> YoloLayout:
    """The layout of ``name``, one of :data:`LAYOUTS` (clear error otherwise)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def stage_table(name: str) -> list[tuple[str, int, int, int]]:
    """``(level, stride, width, blocks)`` per backbone stage of ``name``, widths multiplied."""
    lay = layout(name)
    return [(f"P{i + 1}", 2 ** (i + 1), scaled_width(STAGE_WIDTHS[i], lay.width), n)
            for i, n in enumerate(lay.blocks)]


class CSPDarknet(nn.Module):
    """The backbone: a 3x3 stem, then per stage a stride-2 3x3 and its blocks.

    Each stage is a :class:`~effnet_tutorial.yolo_blocks.BottleneckCSP` of ``n`` blocks, except
    the first when ``plain_first_stage`` (one :class:`~effnet_tutorial.yolo_blocks.DarkBottleneck`
    of hidden width ``c/2``). ``forward``
    returns the maps of levels 3 and up (strides 8, 16, ...).
    """

    def __init__(self, blocks: tuple[int, ...], plain_first_stage: bool = False,
                 width: float = 1.0) -> None:
        super().__init__()
        if not 3 <= len(blocks) <= len(STAGE_WIDTHS) or min(blocks) < 1:
            raise ValueError(f"need 3 to {len(STAGE_WIDTHS)} stages of >= 1 block, got {blocks}")
        c = scaled_width(STEM_WIDTH, width)
        self.stem = ConvBNAct(3, c, 3)
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        for i, n in enumerate(blocks):
            c_out = scaled_width(STAGE_WIDTHS[i], width)
            body = (DarkBottleneck(c_out, c_out // 2) if i == 0 and plain_first_stage
                    else BottleneckCSP(c_out, n))
            self.stages.append(nn.Sequential(ConvBNAct(c, c_out, 3, stride=2), body))
            self.out_channels.append(c_out)
            c = c_out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features[2:]  # levels P3 and up


class CSPPAN(nn.Module):
    """The CSP-ized PAN neck with SPPCSP (the paper's Sec. 4.1 and the released configs).

    Level ``l`` has neck width ``n_l = min(128 * 2^(l-3), 512)``: SPPCSP maps the deepest
    backbone map to ``n_top``; top-down, each level joins a 1x1 of the level above (upsampled)
    with a 1x1 of its backbone map and runs a computation list; bottom-up, a stride-2 3x3 joins
    the level below with the top-down map; a 3x3 to ``2 n_l`` feeds the head. ``csp=False``
    builds the same neck with YOLOv4's plain computation lists and SPP block instead.
    """

    def __init__(self, in_channels: list[int], neck_blocks: int = 2, width: float = 1.0,
                 csp: bool = True) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"a PAN needs at least two levels, got {in_channels}")
        levels = len(in_channels)
        n = [scaled_width(min(128 * 2 ** i, NECK_MAX_WIDTH), width) for i in range(levels)]
        lst = CSPReversedDarkLayer if csp else ReversedDarkLayer
        self.spp = (SPPCSP if csp else SPPBlock)(in_channels[-1], n[-1])
        self.reduce = nn.ModuleList([ConvBNAct(n[i + 1], n[i], 1) for i in range(levels - 1)])
        self.lateral = nn.ModuleList([ConvBNAct(in_channels[i], n[i], 1) for i in range(levels - 1)])
        self.top_down = nn.ModuleList([lst(2 * n[i], n[i], neck_blocks) for i in range(levels - 1)])
        self.down = nn.ModuleList([ConvBNAct(n[i - 1], n[i], 3, stride=2) for i in range(1, levels)])
        self.bottom_up = nn.ModuleList([lst(2 * n[i], n[i], neck_blocks) for i in range(1, levels)])
        self.out = nn.ModuleList([ConvBNAct(n[i], 2 * n[i], 3) for i in range(levels)])
        self.out_channels = [2 * c for c in n]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = len(self.out)
        td = [torch.empty(0)] * levels
        td[-1] = self.spp(features[-1])
        for i in range(levels - 2, -1, -1):
            up = F.interpolate(self.reduce[i](td[i + 1]), scale_factor=2.0, mode="nearest")
            td[i] = self.top_down[i](torch.cat([self.lateral[i](features[i]), up], dim=1))
        outs = [td[0]]
        for i in range(1, levels):
            outs.append(self.bottom_up[i - 1](torch.cat([self.down[i - 1](outs[-1]), td[i]], dim=1)))
        return [conv(o) for conv, o in zip(self.out, outs)]


class YoloDetector(nn.Module):
    """Backbone, neck and head of a YOLOv4-CSP / -large model; returns raw head maps per level."""

    def __init__(self, lay: YoloLayout, classes: int = 80, csp_neck: bool = True) -> None:
        super().__init__()
        self.layout = lay
        self.backbone = CSPDarknet(lay.blocks, lay.plain_first_stage, lay.width)
        self.neck = CSPPAN(self.backbone.out_channels[2:], lay.neck_blocks, lay.width, csp_neck)
        self.head = YOLOHead(self.neck.out_channels, lay.anchors, classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stride = 2 ** len(self.layout.blocks)
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise ValueError(f"{self.layout.name} needs sides divisible by {stride}, got {tuple(x.shape[-2:])}")
        return self.head(self.neck(self.backbone(x)))


def yolo_model(name: str, classes: int = 80, csp_neck: bool = True) -> YoloDetector:
    """YOLOv4-CSP, -P5, -P6 or -P7 with random weights (build big ones under
    ``torch.device("meta")`` to count them without memory)."""
    return YoloDetector(layout(name), classes, csp_neck)


#: Base widths of YOLOv4-tiny's three partial blocks, from cfg/yolov4-tiny.cfg (which puts two
#: stride-2 3x3 convs of 32 and 64 channels before them, 2x2 max-pools after each, and a 3x3 to
#: 512 at the end).
TINY_BASE_WIDTHS: tuple[int, ...] = (64, 128, 256)
#: YOLOv4-tiny's input size in the paper's comparison (416 x 416).
TINY_INPUT_SIZE = 416


class YoloV4Tiny(nn.Module):
    """YOLOv4-tiny: the partial-block backbone and its two-level FPN head (3 anchors each).

    Returns the head maps at strides 32 and 16.
    """

    def __init__(self, classes: int = 80, anchors: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, 32, 3, 2, "leaky"), ConvBNAct(32, 64, 3, 2, "leaky"))
        c, blocks = 64, []
        for b in TINY_BASE_WIDTHS:
            blocks.append(PartialBlock(c, b))
            c = 2 * b
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2)
        self.last = ConvBNAct(c, 512, 3, act="leaky")
        self.neck32 = nn.Sequential(ConvBNAct(512, 256, 1, act="leaky"))
        self.out32 = ConvBNAct(256, 512, 3, act="leaky")
        self.reduce = ConvBNAct(256, 128, 1, act="leaky")
        self.out16 = ConvBNAct(128 + TINY_BASE_WIDTHS[-1], 256, 3, act="leaky")
        self.head = YOLOHead([512, 256], anchors, classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"YOLOv4-tiny needs sides divisible by 32, got {tuple(x.shape[-2:])}")
        x = self.stem(x)
        for block in self.blocks:
            x, tap = block(x)
            x = self.pool(x)  # tap: the last block's 1x1 output at stride 16
        p5 = self.neck32(self.last(x))                                          # (B, 256, H/32, W/32)
        up = F.interpolate(self.reduce(p5), scale_factor=2.0, mode="nearest")   # (B, 128, H/16, W/16)
        return self.head([self.out32(p5), self.out16(torch.cat([up, tap], dim=1))])


def model_costs(name: str) -> tuple[int, int]:
    """``(parameters, multiply-adds)`` of ``name`` at its published input size, counted on the
    meta device (shapes only, no memory). ``name`` is a key of :data:`LAYOUTS` or
    ``"YOLOv4-tiny"``."""
    with torch.device("meta"):
        if name == "YOLOv4-tiny":
            model: nn.Module = YoloV4Tiny()
            size = TINY_INPUT_SIZE
        else:
            model, size = yolo_model(name), layout(name).input_size
    return count_parameters(model), count_flops(model, size)
