"""The building blocks of YOLOv4-CSP, YOLOv4-tiny and YOLOv4-large, with batch norm and activations.

Unlike the bare blocks of :mod:`~effnet_tutorial.scaled_yolo` (convolutions only, to check the
paper's cost formulas), these are the blocks of the released models, so that parameter counts
include batch norm. Each class names the released module it mirrors (Wang, Bochkovskiy & Liao
2021, Sec. 4; the authors' ``models/common.py`` and ``cfg/yolov4-tiny.cfg``):

* :class:`DarkBottleneck`: the Darknet residual block (1x1 then 3x3), ``Bottleneck``;
* :class:`BottleneckCSP`: a CSP-ized stage of Darknet blocks (CSPNet), ``BottleneckCSP``;
* :class:`ReversedDarkLayer` and :class:`CSPReversedDarkLayer`: one "computation list" of the PAN
  neck before and after CSP-ization (the paper's Figure 2), ``BottleneckCSP2``;
* :class:`SPPBlock` and :class:`SPPCSP`: YOLOv4's spatial pyramid pooling block and its CSP form;
* :class:`PartialBlock`: YOLOv4-tiny's CSPOSANet block with partial connection (PCB).

In the book: Chapter 8, *Scaled-YOLOv4: scaling beyond d, w, r*.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: The max-pool kernels of YOLOv4's spatial pyramid pooling (stride 1, "same" padding).
SPP_KERNELS: tuple[int, ...] = (5, 9, 13)


def _positive(**values: int) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"channel counts and depths must be positive ints, got {bad}")


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation, the ``Conv`` of the YOLO code.

    ``act`` is ``"mish"`` (YOLOv4-CSP and -large), ``"leaky"`` (YOLOv4-tiny, slope 0.1) or
    ``"none"``. Padding keeps the size at stride 1 and halves it at stride 2.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1,
                 act: str = "mish") -> None:
        _positive(c_in=c_in, c_out=c_out)
        acts = {"mish": nn.Mish, "leaky": lambda: nn.LeakyReLU(0.1), "none": nn.Identity}
        if act not in acts:
            raise ValueError(f"act must be one of {sorted(acts)}, got {act!r}")
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out),
            acts[act](),
        )


class DarkBottleneck(nn.Module):
    """The Darknet block: 1x1 to ``hidden``, 3x3 back to ``channels``, plus the input if
    ``shortcut`` (the reversed Dark layers of the neck have no shortcut)."""

    def __init__(self, channels: int, hidden: int, shortcut: bool = True) -> None:
        super().__init__()
        _positive(channels=channels, hidden=hidden)
        self.cv1 = ConvBNAct(channels, hidden, 1)
        self.cv2 = ConvBNAct(hidden, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class BottleneckCSP(nn.Module):
    """A CSP-ized stage of ``n`` Darknet blocks (CSPNet), as released with Scaled-YOLOv4.

    The input's ``c`` channels are projected twice to ``c/2``: one path goes through the blocks
    (each 1x1 ``c/2 -> c/2`` then 3x3 ``c/2 -> c/2``) and a 1x1 transition, the other is a single
    1x1; batch norm and Mish act on the concatenation and a 1x1 fuses it back to ``c``.
    """

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        _positive(channels=channels, n=n)
        if channels % 2:
            raise ValueError(f"BottleneckCSP needs an even number of channels, got {channels}")
        half = channels // 2
        self.cv1 = ConvBNAct(channels, half, 1)                         # into the block path
        self.blocks = nn.Sequential(*[DarkBottleneck(half, half) for _ in range(n)])
        self.cv3 = nn.Conv2d(half, half, 1, bias=False)                 # transition of the path
        self.cv2 = nn.Conv2d(channels, half, 1, bias=False)             # the cross-stage path
        self.bn, self.act = nn.BatchNorm2d(channels), nn.Mish()
        self.cv4 = ConvBNAct(channels, channels, 1)                     # fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.cv3(self.blocks(self.cv1(x))), self.cv2(x)], dim=1)  # (B, c, H, W)
        return self.cv4(self.act(self.bn(y)))


class ReversedDarkLayer(nn.Sequential):
    """One computation list of YOLOv4's PAN neck (before CSP-ization, the paper's Figure 2a):
    a 1x1 ``c_in -> c``, then ``n`` reversed Dark layers (3x3 ``c -> 2c``, 1x1 ``2c -> c``),
    without shortcuts. YOLOv4 uses ``n = 2`` after each concatenation of the PAN."""

    def __init__(self, c_in: int, channels: int, n: int = 2) -> None:
        _positive(c_in=c_in, channels=channels, n=n)
        layers: list[nn.Module] = [ConvBNAct(c_in, channels, 1)]
        for _ in range(n):
            layers += [ConvBNAct(channels, 2 * channels, 3), ConvBNAct(2 * channels, channels, 1)]
        super().__init__(*layers)


class CSPReversedDarkLayer(nn.Module):
    """The CSP-ized computation list (Figure 2b; ``BottleneckCSP2`` in the released code).

    A 1x1 ``c_in -> c``; from it, ``n`` Darknet blocks of width ``c`` (1x1 then 3x3, no shortcut)
    on one path and a bare 1x1 on the other; batch norm, Mish and a 1x1 ``2c -> c`` after the
    concatenation.
    """

    def __init__(self, c_in: int, channels: int, n: int = 2) -> None:
        super().__init__()
        _positive(c_in=c_in, channels=channels, n=n)
        self.cv1 = ConvBNAct(c_in, channels, 1)
        self.blocks = nn.Sequential(*[DarkBottleneck(channels, channels, shortcut=False)
                                      for _ in range(n)])
        self.cv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn, self.act = nn.BatchNorm2d(2 * channels), nn.Mish()
        self.cv3 = ConvBNAct(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y = torch.cat([self.blocks(x), self.cv2(x)], dim=1)  # (B, 2c, H, W)
        return self.cv3(self.act(self.bn(y)))


class _Pyramid(nn.Module):
    """Concatenate the input with its max-pools at every kernel of ``kernels`` (stride 1)."""

    def __init__(self, kernels: Sequence[int]) -> None:
        super().__init__()
        self.pools = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [p(x) for p in self.pools], dim=1)  # (B, (1+len(k))*C, H, W)


class SPPBlock(nn.Sequential):
    """YOLOv4's SPP block on the deepest map (``c_in -> c``): 1x1, 3x3 ``c -> 2c``, 1x1, the
    pooling pyramid, 1x1 ``4c -> c``, 3x3 ``c -> 2c``, 1x1 ``2c -> c``."""

    def __init__(self, c_in: int, channels: int, kernels: Sequence[int] = SPP_KERNELS) -> None:
        _positive(c_in=c_in, channels=channels)
        c, m = channels, len(kernels) + 1
        super().__init__(
            ConvBNAct(c_in, c, 1), ConvBNAct(c, 2 * c, 3), ConvBNAct(2 * c, c, 1),
            _Pyramid(kernels),
            ConvBNAct(m * c, c, 1), ConvBNAct(c, 2 * c, 3), ConvBNAct(2 * c, c, 1),
        )


class SPPCSP(nn.Module):
    """The CSP-ized SPP block (``SPPCSP``): the pyramid sits in the middle of one path
    (1x1, 3x3, 1x1, pools, 1x1, 3x3, all at width ``c``), the other path is a 1x1; batch norm,
    Mish and a 1x1 ``2c -> c`` after the concatenation."""

    def __init__(self, c_in: int, channels: int, kernels: Sequence[int] = SPP_KERNELS) -> None:
        super().__init__()
        _positive(c_in=c_in, channels=channels)
        c = channels
        self.path = nn.Sequential(
            ConvBNAct(c_in, c, 1), ConvBNAct(c, c, 3), ConvBNAct(c, c, 1),
            _Pyramid(kernels), ConvBNAct((len(kernels) + 1) * c, c, 1), ConvBNAct(c, c, 3),
        )
        self.cross = nn.Conv2d(c_in, c, 1, bias=False)
        self.bn, self.act = nn.BatchNorm2d(2 * c), nn.Mish()
        self.fuse = ConvBNAct(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.path(x), self.cross(x)], dim=1)  # (B, 2c, H, W)
        return self.fuse(self.act(self.bn(y)))


class PartialBlock(nn.Module):
    """YOLOv4-tiny's computational block: CSPOSANet with a partial connection (PCB).

    A 3x3 base layer of ``b`` channels; only its second half (``b/2``) enters the computational
    block, two 3x3 convs of growth ``g = b/2`` whose outputs are concatenated once (one-shot
    aggregation) and fused by a 1x1 to ``b``; the result is concatenated with the whole base
    layer, so the block ends with ``2b`` channels (``b/2 + k*g = 2b`` with ``k = 3``). Returns
    the output and the 1x1 feature (the tiny neck taps the latter at stride 16).
    """

    def __init__(self, c_in: int, b: int, act: str = "leaky") -> None:
        super().__init__()
        _positive(c_in=c_in, b=b)
        if b % 2:
            raise ValueError(f"PartialBlock needs an even base width b, got {b}")
        g = b // 2
        self.base = ConvBNAct(c_in, b, 3, act=act)
        self.conv1 = ConvBNAct(b // 2, g, 3, act=act)
        self.conv2 = ConvBNAct(g, g, 3, act=act)
        self.transition = ConvBNAct(2 * g, b, 1, act=act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.base(x)                                         # (B, b, H, W)
        y1 = self.conv1(base[:, base.shape[1] // 2:])               # partial: the second half
        y2 = self.conv2(y1)
        t = self.transition(torch.cat([y2, y1], dim=1))             # (B, b, H, W)
        return torch.cat([base, t], dim=1), t                       # (B, 2b, H, W)


class YOLOHead(nn.ModuleList):
    """The YOLO output: one 1x1 conv with bias per level, ``anchors * (classes + 5)`` channels."""

    def __init__(self, in_channels: Sequence[int], anchors: int = 3, classes: int = 80) -> None:
        _positive(anchors=anchors, classes=classes, **{f"in{i}": c for i, c in enumerate(in_channels)})
        super().__init__([nn.Conv2d(c, anchors * (classes + 5), 1) for c in in_channels])

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        if len(features) != len(self):
            raise ValueError(f"expected {len(self)} feature maps, got {len(features)}")
        return [conv(f) for conv, f in zip(self, features)]
