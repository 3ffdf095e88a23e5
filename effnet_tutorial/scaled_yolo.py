"""Scaled-YOLOv4's cost analysis, built from real modules.

Wang, Bochkovskiy & Liao (2021), Sec. 3: the multiply-adds of three kinds of "computational
layer" (``k`` residual blocks of base width ``b`` on a ``w x h`` map) and how they grow with the
input size (factor alpha), the depth (beta) and the width (gamma) (their Table 1); what the
cross-stage-partial (CSP) split saves (their Table 2); and the small cost models behind the
principles for tiny and large detectors (memory access cost, convolutional input/output, and
receptive fields). Published COCO results of EfficientDet and Scaled-YOLOv4 are kept as data, each
with its source, together with the parameter counts of the authors' released YOLO models.

Costs are multiply-adds of convolutions, counted with :func:`~effnet_tutorial.counting.count_flops`.
In the book: Chapter 8, *Scaled-YOLOv4: scaling beyond d, w, r*.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch
from torch import nn

from .counting import InputSize, input_tensor

LayerKind = Literal["res", "resx", "dark"]
LAYER_KINDS: tuple[str, ...] = ("res", "resx", "dark")
#: ResNeXt's grouped 3x3 convolution uses 32 groups (the paper's "gconv(3x3/32)").
RESNEXT_GROUPS = 32

#: The cost of one block in units of ``w*h*b**2`` (Table 1), so a layer of k blocks costs
#: ``coef * whkb^2``. The blocks are res (1x1 b->b/4, 3x3 b/4->b/4, 1x1 b/4->b),
#: resx (1x1 b->b/2, 3x3/32 b/2->b/2, 1x1 b/2->b) and dark (1x1 b->b/2, 3x3 b/2->b).
BLOCK_COST: dict[str, Fraction] = {
    "res": Fraction(17, 16), "resx": Fraction(137, 128), "dark": Fraction(5),
}
#: The per-block cost after CSP-ization (Table 2); blocks see b/2 channels, their inner width is kept.
CSP_BLOCK_COST: dict[str, Fraction] = {
    "res": Fraction(13, 16), "resx": Fraction(73, 128), "dark": Fraction(5, 2),
}
#: The fixed (depth-independent) cost of the CSP split and transition in ``whb^2`` (Table 2).
PAPER_CSP_OVERHEAD = Fraction(3, 4)
#: The overhead of ``BottleneckCSP`` as released with the paper's models: 1x1 b->b/2 twice (the
#: two paths), a 1x1 b/2->b/2 transition and a 1x1 b->b fusion: 1/2 + 1/2 + 1/4 + 1.
RELEASED_CSP_OVERHEAD = Fraction(9, 4)
#: The reductions the paper (Sec. 3.1) reports for CSP-izing each layer, in percent.
PAPER_CSP_REDUCTIONS: dict[str, float] = {"res": 23.5, "resx": 46.7, "dark": 50.0}
#: The factor by which a layer's cost grows when one dimension is scaled by ``x`` (Table 1).
COST_GROWTH = {"size": lambda x: x ** 2, "depth": lambda x: x, "width": lambda x: x ** 2}


def _check(kind: str, b: int, k: int) -> None:
    if kind not in LAYER_KINDS:
        raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}")
    if k < 1 or b < 4 or b % 4:
        raise ValueError(f"need k >= 1 blocks and a base width b >= 4 divisible by 4, got k={k}, b={b}")
    if kind == "resx" and (b // 2) % RESNEXT_GROUPS:
        raise ValueError(f"ResNeXt needs b/2 divisible by {RESNEXT_GROUPS}, got b={b}")


def conv(c_in: int, c_out: int, kernel_size: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free stride-1 convolution that keeps the spatial size."""
    return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)


class Residual(nn.Module):
    """``x + body(x)``: a residual block (BN and activations are left out: they cost no MACs)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def block(kind: LayerKind, channels: int, inner: int) -> Residual:
    """One block of a computational layer: ``channels`` in and out, ``inner`` inside.

    The paper's blocks have ``inner = b/4`` (res), ``b/2`` (resx) and ``b/2`` (dark).
    """
    if kind == "res":
        return Residual(conv(channels, inner), conv(inner, inner, 3), conv(inner, channels))
    if kind == "resx":
        return Residual(conv(channels, inner), conv(inner, inner, 3, groups=RESNEXT_GROUPS),
                        conv(inner, channels))
    if kind == "dark":
        return Residual(conv(channels, inner), conv(inner, channels, 3))
    raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}")


def inner_width(kind: LayerKind, b: int) -> int:
    """The width inside a block of base width ``b``: ``b/4`` for res, ``b/2`` for resx and dark."""
    return b // 4 if kind == "res" else b // 2


def computational_layer(kind: LayerKind, b: int, k: int) -> nn.Sequential:
    """``k`` blocks of base width ``b`` (Table 1's "Res layer", "ResX layer", "Dark layer")."""
    _check(kind, b, k)
    return nn.Sequential(*[block(kind, b, inner_width(kind, b)) for _ in range(k)])


class CSPLayer(nn.Module):
    """The CSP-ized computational layer: half the channels go through ``k`` blocks, half go around.

    The blocks see ``b/2`` channels but keep the inner width of the original blocks (Table 2's
    per-block costs follow from that). ``transitions`` chooses the layers around them:

    * ``"paper"``: a 1x1 ``b -> b/2`` conv feeds the blocks, the other half of the input channels
      is the cross path (a slice, free), a 1x1 ``b/2 -> b/2`` transition closes the block path:
      ``(1/2 + 1/4) whb^2``, the constant ``3/4`` of Table 2.
    * ``"released"``: ``BottleneckCSP`` of the released models: 1x1 ``b -> b/2`` into the blocks,
      1x1 ``b -> b/2`` as the cross path, a 1x1 ``b/2 -> b/2`` transition and a 1x1 ``b -> b``
      after the concatenation: ``9/4 whb^2``.
    """

    def __init__(self, kind: LayerKind, b: int, k: int,
                 transitions: Literal["paper", "released"] = "paper") -> None:
        super().__init__()
        _check(kind, b, k)
        if transitions not in ("paper", "released"):
            raise ValueError(f"transitions must be 'paper' or 'released', got {transitions!r}")
        half = b // 2
        self.b, self.transitions = b, transitions
        self.enter = conv(b, half)
        self.blocks = nn.Sequential(*[block(kind, half, inner_width(kind, b)) for _ in range(k)])
        self.transition = conv(half, half)
        self.cross = conv(b, half) if transitions == "released" else None
        self.fuse = conv(b, b) if transitions == "released" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.transition(self.blocks(self.enter(x)))  # (B, b/2, H, W)
        if self.fuse is None:
            return torch.cat([y, x[:, self.b // 2:]], dim=1)  # cross path: the other half, as is
        return self.fuse(torch.cat([y, self.cross(x)], dim=1))  # (B, b, H, W)


def layer_cost(kind: LayerKind, w: int, h: int, b: int, k: int) -> Fraction:
    """Table 1: multiply-adds of a computational layer, ``coef * w*h*k*b**2``."""
    return BLOCK_COST[kind] * w * h * k * b * b


def csp_layer_cost(kind: LayerKind, w: int, h: int, b: int, k: int,
                   overhead: Fraction = PAPER_CSP_OVERHEAD) -> Fraction:
    """Table 2: multiply-adds of the CSP-ized layer, ``w*h*b**2 * (overhead + coef * k)``."""
    return w * h * b * b * (Fraction(overhead) + CSP_BLOCK_COST[kind] * k)


def csp_reduction(kind: LayerKind, k: float = float("inf"),
                  overhead: Fraction = PAPER_CSP_OVERHEAD) -> float:
    """The fraction of multiply-adds that CSP-ization saves for a layer of ``k`` blocks.

    With ``k = inf`` (the default) the overhead drops out and the result is
    ``1 - CSP_BLOCK_COST / BLOCK_COST``: the paper's 23.5%, 46.7% and 50.0%.
    """
    if kind not in LAYER_KINDS:
        raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}")
    if k == float("inf"):
        return float(1 - CSP_BLOCK_COST[kind] / BLOCK_COST[kind])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(1 - (Fraction(overhead) + CSP_BLOCK_COST[kind] * k) / (BLOCK_COST[kind] * k))


def _conv_tensor_sizes(model: nn.Module, input_size: InputSize) -> list[tuple[int, int, int]]:
    """(input elements, output elements, weight elements) of every conv in one forward pass."""
    rows: list[tuple[int, int, int]] = []

    def hook(m, inputs, output):
        rows.append((inputs[0].numel(), output.numel(), m.weight.numel()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(input_tensor(model, input_size))
    finally:
        for h in handles:
            h.remove()
    return rows


def memory_access_cost(model: nn.Module, input_size: InputSize) -> int:
    """ShuffleNet V2's memory access cost: for every conv, the elements it reads and writes
    (input map, output map, weights). For a 1x1 conv: ``hw*(c_in + c_out) + c_in*c_out``.
    """
    return sum(i + o + w for i, o, w in _conv_tensor_sizes(model, input_size))


def conv_io(model: nn.Module, input_size: InputSize) -> int:
    """Convolutional input/output (CIO, from HarDNet): the sum over convs of input plus output
    elements, a proxy for DRAM traffic.
    """
    return sum(i + o for i, o, _ in _conv_tensor_sizes(model, input_size))


class OSABlock(nn.Module):
    """One-shot aggregation (VoVNet/OSANet): ``k`` 3x3 convs of ``g`` channels in a chain, all
    their outputs concatenated once with the input (``b + k*g`` channels), then a 1x1 to ``out``
    (no 1x1 when ``out`` is None). The chain costs ``O(max(whbg, whkg^2))``.
    """

    def __init__(self, b: int, g: int, k: int, out: int | None = None) -> None:
        super().__init__()
        if min(b, g, k) < 1:
            raise ValueError(f"b, g and k must be positive, got {b}, {g}, {k}")
        self.convs = nn.ModuleList([conv(b if i == 0 else g, g, 3) for i in range(k)])
        self.aggregate = conv(b + k * g, out) if out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for c in self.convs:
            outs.append(c(outs[-1]))
        y = torch.cat(outs, dim=1)  # (B, b + k*g, H, W)
        return self.aggregate(y) if self.aggregate is not None else y


class DenseBlock(nn.Module):
    """DenseNet's block: ``k`` 3x3 convs of growth ``g``, layer ``i`` reading the input and all
    earlier outputs (``b + i*g`` channels). Its cost is ``O(whgbk)`` (plus ``whk^2g^2``).
    """

    def __init__(self, b: int, g: int, k: int) -> None:
        super().__init__()
        if min(b, g, k) < 1:
            raise ValueError(f"b, g and k must be positive, got {b}, {g}, {k}")
        self.convs = nn.ModuleList([conv(b + i * g, g, 3) for i in range(k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = torch.cat([x, c(x)], dim=1)  # (B, b + (i+1)*g, H, W)
        return x


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """Receptive field (in input pixels) of a chain of ``(kernel, stride)`` layers."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def csp_darknet_layers(blocks_per_stage: Sequence[int]) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of a CSPDarknet-style backbone: a 3x3 stem, then per stage a 3x3
    stride-2 conv and ``n`` blocks (1x1 then 3x3). Width does not appear: it changes no kernel.
    """
    layers = [(3, 1)]
    for n in blocks_per_stage:
        layers.append((3, 2))
        layers += [(1, 1), (3, 1)] * n
    return layers


@dataclass(frozen=True)
class DetectorResult:
    """One published COCO result: the model, its input side, and AP on test-dev (percent)."""

    name: str
    input_size: int
    ap: float
    params_millions: float | None
    flops_billions: float | None
    source: str


#: EfficientDet's scaling table (Table 1 of Tan, Pang and Le 2020) with the input size, backbone,
#: BiFPN width and depth, and head depth of D0 to D7.
EFFICIENTDET_SCALING: dict[str, tuple[int, str, int, int, int]] = {
    "D0": (512, "B0", 64, 3, 3), "D1": (640, "B1", 88, 4, 3), "D2": (768, "B2", 112, 5, 3),
    "D3": (896, "B3", 160, 6, 4), "D4": (1024, "B4", 224, 7, 4), "D5": (1280, "B5", 288, 7, 4),
    "D6": (1280, "B6", 384, 8, 5), "D7": (1536, "B6", 384, 8, 5),
}
_EFFDET_SOURCE = "Tan, Pang & Le, arXiv v7 (27 Jul 2020), Table 2"
#: EfficientDet COCO test-dev AP, parameters (millions) and FLOPs (billions of multiply-adds) as
#: printed in Table 2 of the final arXiv version, v7 (stamped 27 Jul 2020), which added D7x (P3-P8,
#: B7 backbone) and evaluated with soft-NMS (Sec. 5.1). The parameters are rounded to two
#: significant figures from 10M on (21M, 34M, ...). automl's README listed finer figures and, until
#: March 2021, D2 43.0 and D3 47.5 AP; those are not the paper's.
EFFICIENTDET_COCO: tuple[DetectorResult, ...] = tuple(
    DetectorResult(f"EfficientDet-{d}", size, ap, p, f, _EFFDET_SOURCE)
    for d, size, ap, p, f in [
        ("D0", 512, 34.6, 3.9, 2.5),     # v7 Table 2
        ("D1", 640, 40.5, 6.6, 6.1),     # v7 Table 2
        ("D2", 768, 43.9, 8.1, 11.0),    # v7 Table 2
        ("D3", 896, 47.2, 12.0, 25.0),   # v7 Table 2 ("12M", "25B")
        ("D4", 1024, 49.7, 21.0, 55.0),  # v7 Table 2 ("21M", "55B")
        ("D5", 1280, 51.5, 34.0, 135.0),  # v7 Table 2
        ("D6", 1280, 52.6, 52.0, 226.0),  # v7 Table 2
        ("D7", 1536, 53.7, 52.0, 325.0),  # v7 Table 2
        ("D7x", 1536, 55.1, 77.0, 410.0),  # v7 Table 2 and abstract (not in v1-v6)
    ]
)
#: EfficientDet-D7's test-dev AP changed across the paper's versions (same name, retrained and
#: re-evaluated): the book's other tables use the final one.
EFFICIENTDET_D7_AP_BY_VERSION: tuple[tuple[str, float], ...] = (
    ("arXiv v1 (Nov 2019)", 51.0),       # v1 abstract: "51.0 mAP ... 52M parameters and 326B FLOPS"
    ("CVPR 2020", 52.2),                 # CVPR abstract (doi 10.1109/CVPR42600.2020.01079): 52.2 AP, 52M, 325B
    ("arXiv v7 (27 Jul 2020)", 53.7),    # v7 Table 2; 600 epochs, soft-NMS (Sec. 5.1)
)
_YOLO_SOURCE = "Wang, Bochkovskiy & Liao, authors' ScaledYOLOv4 README (test-dev)"
#: YOLOv4-large COCO test-dev AP without test-time augmentation, as in the authors' README
#: (WongKinYiu/ScaledYOLOv4, branch yolov4-large). Neither the README nor the abstract gives
#: parameters or FLOPs: see :data:`SCALED_YOLOV4_RELEASED_PARAMS`.
SCALED_YOLOV4_COCO: tuple[DetectorResult, ...] = (
    DetectorResult("YOLOv4-P5", 896, 51.4, None, None, _YOLO_SOURCE),   # README: 51.4 AP, 41 fps
    DetectorResult("YOLOv4-P6", 1280, 54.3, None, None, _YOLO_SOURCE),  # README: 54.3 AP, 30 fps
    DetectorResult("YOLOv4-P7", 1536, 55.4, None, None, _YOLO_SOURCE),  # README: 55.4 AP, 15 fps
)
#: Batch-1 frames per second of YOLOv4-P5/P6/P7 on a V100 (authors' README, "batch1 throughput").
SCALED_YOLOV4_FPS: dict[str, int] = {"YOLOv4-P5": 41, "YOLOv4-P6": 30, "YOLOv4-P7": 15}
#: YOLOv4-tiny as the paper's abstract gives it (both arXiv versions), 22.0% AP (42.0% AP50) on COCO at
#: about 443 FPS on an RTX 2080Ti; 416 pixels is the input of the released cfg/yolov4-tiny.cfg.
YOLOV4_TINY_COCO = DetectorResult("YOLOv4-tiny", 416, 22.0, None, None,
                                  "Wang, Bochkovskiy & Liao, arXiv abstract")
#: YOLOv4-tiny's frame rate in the abstract, and the GPU it was measured on.
YOLOV4_TINY_FPS: tuple[int, str] = (443, "RTX 2080Ti")
#: YOLOv4-P7's headline AP and V100 frame rate in the abstracts of the first and the revised arXiv
#: version (the revision is dated Feb 2021 by secondary indexes; the README keeps the first numbers).
SCALED_YOLOV4_P7_AP_BY_VERSION: tuple[tuple[str, float], ...] = (
    ("arXiv v1 (16 Nov 2020), README", 55.4),  # README test-dev 55.4 (73.3 AP50), 15 fps
    ("revised arXiv version", 55.5),           # abstract: 55.5% AP (73.4% AP50), ~16 FPS on V100
)
#: Parameter counts of the authors' released models (80 classes), which neither the paper's text we
#: could read nor the README states. Counted with ``sum(p.numel())`` after instantiating the
#: authors' own code: ``models/yolo.py`` ``Model(yaml, nc=80)`` of WongKinYiu/ScaledYOLOv4, branch
#: yolov4-large @ 676800364a34, for the four yaml models; for YOLOv4-tiny, the conv weights plus batch
#: norm scale and shift (or conv bias) of branch yolov4-tiny @ faf50b1de72d, cfg/yolov4-tiny.cfg.
#: (The Darknet cfg of YOLOv4-CSP on branch yolov4-csp parses to 52,921,437, 3,328 fewer.)
SCALED_YOLOV4_RELEASED_PARAMS: dict[str, int] = {
    "YOLOv4-CSP": 52_924_765, "YOLOv4-tiny": 6_056_606, "YOLOv4-P5": 70_834_012,
    "YOLOv4-P6": 127_590_576, "YOLOv4-P7": 287_575_580,
}
#: The number of blocks per backbone stage of YOLOv4-large (Sec. 4.3). P5 uses the first five
#: stages, P6 six and P7 seven.
YOLOV4_LARGE_STAGE_BLOCKS: tuple[int, ...] = (1, 3, 15, 15, 7, 7, 7)
