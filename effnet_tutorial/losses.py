"""Focal loss, Huber box loss and EfficientDet's detection loss.

A dense detector scores ~49k anchors x C classes per image, and nearly all of them are easy
background. Lin et al. (2017), *Focal Loss for Dense Object Detection*, Sec. 3, eq. 5, scale the
cross-entropy of each of those binary decisions by ``alpha_t * (1 - p_t) ** gamma`` so the easy
ones stop dominating; EfficientDet (Tan, Pang & Le, 2020) trains with it (alpha 0.25, gamma 1.5)
plus a Huber loss on the box offsets, weighted by 50.

Formats: head outputs are NCHW lists, one tensor per pyramid level, class logits
``(B, A*C, H, W)`` with channel ``a*C + c`` for anchor ``a`` and class ``c``, box outputs
``(B, A*4, H, W)`` with codes ``[ty, tx, th, tw]`` at channels ``4a .. 4a+3``. Targets are the
per-level maps of :func:`effnet_tutorial.anchors.targets_by_level`: classes ``(B, H, W, A)``
(0-based, ``-1`` background, ``-2`` ignored) and codes ``(B, H, W, A*4)``.

Exactness details, from the reference (effdet ``loss.py``, automl ``train_lib.py``): the focal
factors use the hard 0/1 labels and only the cross-entropy sees smoothed labels; both losses are
normalised by ``sum(num_positives) + 1`` over the batch, the box loss by another 4; the box loss
skips every *element* whose target is exactly 0.

In the book: Chapter 11, *Focal loss*.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import fast

#: Class target of an anchor left out of the classification loss (never produced by
#: :func:`effnet_tutorial.anchors.match_anchors`, which has no ignore band; kept for parity).
IGNORE = -2


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 1.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Elementwise sigmoid focal loss, same shape as ``logits`` (no reduction, no normaliser).

    ``FL = alpha_t * (1 - p_t) ** gamma * BCE(logits, y_smooth)`` with ``p = sigmoid(logits)``,
    ``p_t = y p + (1 - y)(1 - p)`` and ``alpha_t = y alpha + (1 - y)(1 - alpha)`` computed on the
    hard one-hot ``targets`` ``y``; label smoothing ``y_smooth = y (1 - s) + s / 2`` enters only
    the cross-entropy (Lin et al. 2017, eq. 5; the EfficientDet reference's current variant).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid()
    p_t = targets * prob + (1.0 - targets) * (1.0 - prob)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    modulator = (1.0 - p_t) ** gamma
    if label_smoothing > 0.0:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_t * modulator * bce


def huber_loss(input: torch.Tensor, target: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    """Elementwise Huber loss: ``0.5 x**2`` for ``|x| <= delta``, else ``delta (|x| - delta/2)``.

    Quadratic near zero, linear (robust to outliers) beyond ``delta``; EfficientDet uses
    ``delta = 0.1`` on the box codes. Note this is *not* ``F.smooth_l1_loss``, which divides by
    ``beta``.
    """
    if input.shape != target.shape:
        raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} differ")
    abs_err = (input - target).abs()
    quadratic = abs_err.clamp(max=delta)
    return 0.5 * quadratic**2 + delta * (abs_err - quadratic)


def _check_class_targets(cls_targets: torch.Tensor, num_classes: int) -> None:
    """Raise a ``ValueError`` if a class target is not below ``num_classes``."""
    if (cls_targets >= num_classes).any():
        raise ValueError(
            f"class targets must be < num_classes={num_classes}, got {int(cls_targets.max())}"
        )


def one_hot_targets(cls_targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids ``(...)`` -> float one-hot ``(..., num_classes)``; negative ids give all zeros.

    Background (``-1``) and ignored (``-2``) anchors are negatives for every class.
    """
    _check_class_targets(cls_targets, num_classes)
    # Scatter into float zeros: no int64 one-hot (twice the bytes) and no extra masked copy.
    onehot = torch.zeros(*cls_targets.shape, num_classes, device=cls_targets.device)
    positive = (cls_targets >= 0).unsqueeze(-1).to(onehot.dtype)
    return onehot.scatter_(-1, cls_targets.long().clamp(min=0).unsqueeze(-1), positive)


def _check_level(
    level: int, cls_out: torch.Tensor, box_out: torch.Tensor, cls_t: torch.Tensor,
    box_t: torch.Tensor, num_classes: int,
) -> None:
    """Raise a ``ValueError`` naming the level and tensor whose shape is inconsistent."""
    if cls_t.ndim != 4:
        raise ValueError(
            f"level {level}: cls_targets must be (B, H, W, A), got {tuple(cls_t.shape)}"
        )
    b, h, w, a = cls_t.shape
    expected = {
        "cls_outputs": (cls_out, (b, a * num_classes, h, w)),
        "box_outputs": (box_out, (b, a * 4, h, w)),
        "box_targets": (box_t, (b, h, w, a * 4)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"level {level}: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                f"(outputs are NCHW (B, A*C, H, W) / (B, A*4, H, W); targets (B, H, W, A) / "
                f"(B, H, W, A*4) with A={a}, C={num_classes})"
            )


def focal_loss_sum(
    logits: torch.Tensor,
    cls_targets: torch.Tensor,
    num_classes: int,
    alpha: float = 0.25,
    gamma: float = 1.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``sum(focal_loss(logits, one_hot(cls_targets)))`` over the anchors that are not ignored.

    ``logits`` ``(..., A*C)`` holds anchor ``a``'s class ``c`` at ``a*C + c``; ``cls_targets``
    ``(..., A)`` the 0-based class of each anchor (``-1`` background, ``-2`` ignored). While
    :func:`effnet_tutorial.fast.enabled`, the same sum comes from
    :func:`effnet_tutorial.fast.kernels.focal_loss_sum`, which builds no one-hot tensor.
    """
    if logits.shape[:-1] != cls_targets.shape[:-1] or logits.shape[-1] != cls_targets.shape[-1] * num_classes:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not hold {num_classes} classes for each anchor of "
            f"targets {tuple(cls_targets.shape)}"
        )
    _check_class_targets(cls_targets, num_classes)
    if fast.enabled():
        return fast.kernels.focal_loss_sum(logits, cls_targets, num_classes, alpha, gamma,
                                           label_smoothing, ignore_index=IGNORE)
    logits = logits.unflatten(-1, (-1, num_classes))  # (..., A, C)
    targets = one_hot_targets(cls_targets, num_classes)  # (..., A, C)
    loss = focal_loss(logits, targets, alpha, gamma, label_smoothing)
    counted = (cls_targets != IGNORE).unsqueeze(-1)  # (..., A, 1)
    return (loss * counted).sum()


def detection_loss(
    cls_outputs: Sequence[torch.Tensor],
    box_outputs: Sequence[torch.Tensor],
    cls_targets: Sequence[torch.Tensor],
    box_targets: Sequence[torch.Tensor],
    num_positives: torch.Tensor,
    num_classes: int,
    alpha: float = 0.25,
    gamma: float = 1.5,
    delta: float = 0.1,
    box_loss_weight: float = 50.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EfficientDet's training loss over all levels: ``(total, cls_loss, box_loss)``.

    ``cls_loss = sum(focal) / N`` over every anchor x class that is not ignored, ``box_loss =
    sum(huber * (box_target != 0)) / (4 N)`` and ``total = cls_loss + box_loss_weight *
    box_loss``, where ``N = sum(num_positives) + 1`` over the batch (the ``+ 1`` keeps a batch
    without objects finite). Shapes and channel layouts are in the module docstring;
    ``num_positives`` is ``(B,)`` or a scalar.
    """
    levels = len(cls_outputs)
    if not levels or not levels == len(box_outputs) == len(cls_targets) == len(box_targets):
        raise ValueError(
            "need one tensor per level in each list, got "
            f"{len(cls_outputs)}, {len(box_outputs)}, {len(cls_targets)}, {len(box_targets)}"
        )
    normalizer = torch.as_tensor(num_positives).sum().float() + 1.0
    cls_losses, box_losses = [], []
    for level in range(levels):
        cls_out, box_out = cls_outputs[level], box_outputs[level]
        cls_t, box_t = cls_targets[level], box_targets[level]
        _check_level(level, cls_out, box_out, cls_t, box_t, num_classes)
        # The permuted 4-D view (B, H, W, A*C) is a view, not a copy: channel a*C + c is anchor
        # a, class c, the layout focal_loss_sum reads next to the (B, H, W, A) targets.
        logits = cls_out.permute(0, 2, 3, 1).float()
        cls_losses.append(focal_loss_sum(logits, cls_t, num_classes, alpha, gamma, label_smoothing))
        codes = box_out.permute(0, 2, 3, 1).float()  # (B, H, W, A*4)
        hub = huber_loss(codes, box_t.to(codes.dtype), delta)
        box_losses.append((hub * (box_t != 0.0)).sum())
    cls_loss = torch.stack(cls_losses).sum() / normalizer
    box_loss = torch.stack(box_losses).sum() / (normalizer * 4.0)
    return cls_loss + box_loss_weight * box_loss, cls_loss, box_loss
