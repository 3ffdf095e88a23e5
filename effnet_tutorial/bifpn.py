"""BiFPN: the bidirectional feature pyramid of EfficientDet, with weighted feature fusion.

Tan, Pang & Le (2020), Sec. 3: starting from PANet's top-down plus bottom-up paths, BiFPN drops
nodes with a single input, adds an edge from each input level to the output node of the same
level, fuses inputs with learned non-negative weights ("fast normalised fusion", eq. 3) and
repeats the whole layer. The graph is data (:func:`bifpn_nodes`), so the book can draw exactly
the graph the model runs.

Exactness details, from the reference code: every input edge has its own resampling module (a
1x1 conv + BN when the channel count differs, then max-pool or nearest upsampling to the exact
target size); after fusion comes swish (ReLU6 in the Lite detectors), then a separable 3x3 conv,
then BN (pre-activation).

In the book: Chapter 9, *Multi-scale features: FPN, PANet, NAS-FPN and BiFPN*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (Activation, DepthwiseSeparableConv2d, PaddingMode, check_padding, create_conv2d,
                     make_activation, same_padding)

FUSION_METHODS: tuple[str, ...] = ("fastattn", "attn", "sum")


@dataclass(frozen=True)
class FpnNode:
    """A node of the BiFPN graph: the pyramid level it produces and the ids of its inputs.

    Ids ``0 .. L-1`` are the layer's inputs (P3 ... P7); node ``k`` of the layer gets id ``L + k``.
    """

    level: int
    inputs: tuple[int, ...]


def bifpn_nodes(min_level: int = 3, max_level: int = 7) -> list[FpnNode]:
    """The BiFPN graph: a top-down path (P6_td ... P3_out), then a bottom-up path (P4_out ... P7_out).

    A top-down node fuses its level's latest node with the level above; a bottom-up node fuses
    every node of its level so far (the input and, except at the top, the top-down node: the
    same-level skip edge) with the output of the level below. For P3-P7 this gives the eight
    nodes of the paper's Figure 2(d).
    """
    if not 0 < min_level < max_level:
        raise ValueError(f"need 0 < min_level < max_level, got {min_level}, {max_level}")
    ids = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    next_id = max_level - min_level + 1
    nodes = []
    for level in range(max_level - 1, min_level - 1, -1):  # top-down
        nodes.append(FpnNode(level, (ids[level][-1], ids[level + 1][-1])))
        ids[level].append(next_id)
        next_id += 1
    for level in range(min_level + 1, max_level + 1):  # bottom-up
        nodes.append(FpnNode(level, tuple(ids[level]) + (ids[level - 1][-1],)))
        ids[level].append(next_id)
        next_id += 1
    return nodes


class WeightedFusion(nn.Module):
    """Fuse same-shaped feature maps with one learned scalar per input (paper Sec. 3.3).

    * ``"fastattn"``: fast normalised fusion, ``sum_i relu(w_i) x_i / (sum_j relu(w_j) + eps)``.
    * ``"attn"``: softmax-based fusion, ``sum_i softmax(w)_i x_i``.
    * ``"sum"``: unweighted sum (used by D6 and D7 "for stability").

    The weights start at 1 and are stored raw (before ReLU/softmax), as in the reference.
    """

    def __init__(self, num_inputs: int, method: str = "fastattn", eps: float = 1e-4) -> None:
        super().__init__()
        if method not in FUSION_METHODS:
            raise ValueError(f"unknown fusion method {method!r}; valid: {FUSION_METHODS}")
        if num_inputs < 2:
            raise ValueError(f"a fusion node needs at least 2 inputs, got {num_inputs}")
        self.method, self.eps = method, eps
        self.weights = nn.Parameter(torch.ones(num_inputs)) if method != "sum" else None

    def normalized_weights(self) -> torch.Tensor | None:
        """The weight each input gets, ``(num_inputs,)``, or ``None`` for the plain sum."""
        if self.weights is None:
            return None
        if self.method == "attn":
            return torch.softmax(self.weights, dim=0)
        w = F.relu(self.weights)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        w = self.normalized_weights()
        if w is None:
            out = inputs[0] + inputs[1]
            for x in inputs[2:]:
                out = out + x
            return out
        w = w.to(inputs[0].dtype)
        out = inputs[0] * w[0]
        for x, wi in zip(inputs[1:], w[1:]):
            out = out + x * wi
        return out


def max_pool_to(x: torch.Tensor, size: tuple[int, int], padding: PaddingMode) -> torch.Tensor:
    """Downsample ``x`` to ``size`` with a ``(s+1) x (s+1)`` max-pool of stride ``s``.

    ``s = (in - 1) // out + 1`` (2 between pyramid levels). ``"same"`` pads like TensorFlow, with
    ``-inf`` so padding never wins the max; ``"symmetric"`` pads ``s // 2`` on every side.
    """
    stride = (x.shape[-2] - 1) // size[0] + 1
    kernel = stride + 1
    if padding == "same":
        top, bottom = same_padding(x.shape[-2], kernel, stride)
        left, right = same_padding(x.shape[-1], kernel, stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, kernel, stride)
    return F.max_pool2d(x, kernel, stride, padding=((stride - 1) + (kernel - 1)) // 2)


class Resample(nn.Module):
    """Bring a feature map to ``out_channels`` (1x1 conv + BN) and to a target size.

    Larger maps are max-pooled, smaller ones upsampled by nearest neighbour to the exact size (so
    any input size works, not only multiples of 128). No activation.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: PaddingMode = "same",
                 bias: bool = True, bn_eps: float = 1e-3, bn_momentum: float = 0.01) -> None:
        super().__init__()
        self.padding = padding
        if in_channels != out_channels:
            self.conv = create_conv2d(in_channels, out_channels, 1, bias=bias, padding=padding)
            self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        else:
            self.conv, self.bn = None, None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # noqa: D102
        if self.conv is not None:
            x = self.bn(self.conv(x))
        h, w = x.shape[-2:]
        if h > size[0] and w > size[1]:
            x = max_pool_to(x, size, self.padding)
        elif h < size[0] or w < size[1]:
            x = F.interpolate(x, size=size, mode="nearest")
        return x


class BiFpnNode(nn.Module):
    """One fusion node: resample each input, fuse, then swish -> separable 3x3 conv -> BN."""

    def __init__(self, node: FpnNode, in_channels: Sequence[int], channels: int, fusion: str,
                 padding: PaddingMode, bias: bool, bn_eps: float, bn_momentum: float,
                 activation: Activation = "swish") -> None:
        super().__init__()
        self.spec = node  # the graph node this module computes: its level and input ids
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.resample = nn.ModuleDict({
            str(i): Resample(in_channels[i], channels, padding, bias, **bn) for i in node.inputs
        })
        self.fusion = WeightedFusion(len(node.inputs), fusion)
        self.act = make_activation(activation)  # acts on the fusion's own output
        self.conv = DepthwiseSeparableConv2d(channels, channels, 3, bias=bias, padding=padding)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:  # noqa: D102
        inputs = [self.resample[str(i)](features[i], size) for i in self.spec.inputs]
        return self.bn(self.conv(self.act(self.fusion(inputs))))


class BiFpnLayer(nn.Module):
    """One BiFPN layer: all nodes of :func:`bifpn_nodes`, returning the new P3 ... P7."""

    def __init__(self, in_channels: Sequence[int], channels: int, min_level: int = 3,
                 max_level: int = 7, fusion: str = "fastattn", padding: PaddingMode = "same",
                 bias: bool = True, bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 activation: Activation = "swish") -> None:
        super().__init__()
        self.min_level, self.num_levels = min_level, max_level - min_level + 1
        graph = bifpn_nodes(min_level, max_level)
        node_channels = list(in_channels) + [channels] * len(graph)
        self.nodes = nn.ModuleList([
            BiFpnNode(n, node_channels, channels, fusion, padding, bias, bn_eps, bn_momentum,
                      activation)
            for n in graph
        ])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        sizes = {self.min_level + i: tuple(f.shape[-2:]) for i, f in enumerate(features)}
        nodes = list(features)
        for node in self.nodes:
            nodes.append(node(nodes, sizes[node.spec.level]))
        return nodes[-self.num_levels:]


class BiFpn(nn.Module):
    """The BiFPN of EfficientDet: extra levels made from the backbone's last map, then the layers.

    ``in_channels`` are the backbone's P3-P5 channels. P6 is ``maxpool(BN(conv1x1(P5)))``, P7 is
    ``maxpool(P6)`` (and so on up to ``max_level``).
    """

    def __init__(self, in_channels: Sequence[int], channels: int, repeats: int, min_level: int = 3,
                 max_level: int = 7, fusion: str = "fastattn", padding: PaddingMode = "same",
                 bias: bool = True, bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 activation: Activation = "swish") -> None:
        super().__init__()
        check_padding(padding)
        if repeats < 1 or channels < 1:
            raise ValueError(f"need repeats >= 1 and channels >= 1, got {repeats}, {channels}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        levels = list(in_channels)
        self.extra_levels = nn.ModuleList()
        while len(levels) < max_level - min_level + 1:
            self.extra_levels.append(Resample(levels[-1], channels, padding, bias, **bn))
            levels.append(channels)
        self.cells = nn.ModuleList()
        for _ in range(repeats):
            self.cells.append(BiFpnLayer(levels, channels, min_level, max_level, fusion, padding,
                                         bias, **bn, activation=activation))
            levels = [channels] * len(levels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        features = list(features)
        for resample in self.extra_levels:
            h, w = features[-1].shape[-2:]
            features.append(resample(features[-1], ((h - 1) // 2 + 1, (w - 1) // 2 + 1)))
        for cell in self.cells:
            features = cell(features)
        return features


def glorot_uniform_(weight: torch.Tensor, groups: int = 1) -> None:
    """TF's ``glorot_uniform`` as the reference applies it to BiFPN convolutions."""
    receptive = weight[0][0].numel()
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive // groups
    limit = math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0))
    with torch.no_grad():
        weight.uniform_(-limit, limit)
