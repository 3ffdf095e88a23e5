"""Anchors, IoU, matching and box coding: how EfficientDet turns boxes into per-anchor targets.

EfficientDet (Tan, Pang & Le, 2020) keeps RetinaNet's dense anchor scheme (Lin et al., 2017,
*Focal Loss for Dense Object Detection*, Sec. 4): at every cell of pyramid levels P3-P7 sit
``num_scales * len(aspect_ratios)`` = 9 anchors; an anchor whose IoU with a ground-truth box is at
least 0.5 learns that box's class and its offsets, every other anchor is background.

Box formats, stated once for the whole module:

* **xyxy**: ``(x1, y1, x2, y2)`` in input-image pixels, ``x2 >= x1`` and ``y2 >= y1``. Every box
  argument and every returned box of this package is xyxy.
* **codes**: ``(ty, tx, th, tw)``, the regression targets of one box relative to one anchor, in
  that order (y first) because it is the channel order of the box head in the reference code;
  keeping it lets pretrained effdet / automl weights be loaded unchanged.

Class labels are 0-based (``0 .. num_classes - 1``); ``-1`` is background (for anchors) and
padding (for ground-truth rows).

Exactness details, taken from the reference implementation (effdet ``anchors.py`` and
``object_detection/``): feature sizes halve with ceiling; strides are ``image_size /
feature_size`` per axis (floats for sizes not divisible by 128); anchors are neither clipped nor
normalised; matching has no ignore band and force-matches every box's best anchor; the box coder
has no scale factors and adds ``1e-7`` to the sizes before the logarithm.

In the book: Chapter 10, *Anchors, IoU, matching and box coding*.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import torch

from . import fast

ImageSize = int | Sequence[int]

#: ``(x_multiplier, y_multiplier)`` pairs of the released EfficientDet checkpoints.
ASPECT_RATIOS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))

#: The box coder's guard against ``log(0)`` and division by zero, added to all four sizes as in
#: effdet (``object_detection/box_coder.py``: ``EPS = 1e-7``, ``h += eps``). automl's TensorFlow
#: coder (``faster_rcnn_box_coder.py``) instead floors the sizes at ``EPSILON = 1e-8``
#: (``tf.maximum``); for boxes of a pixel or more the two differ below float32 resolution.
BOX_CODER_EPS = 1e-7


# --------------------------------------------------------------------------- input checks
def _as_hw(image_size: ImageSize) -> tuple[int, int]:
    """``512`` or ``(H, W)`` -> ``(H, W)``, rejecting anything else."""
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = tuple(int(s) for s in image_size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return hw  # type: ignore[return-value]


def check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    """Raise a ``ValueError`` unless ``boxes`` is a finite float ``(N, 4)`` xyxy tensor.

    Catches the common mistakes early, with a message that says what is wrong: a yxyx or xywh
    tensor usually shows up as rows with ``x2 < x1`` or ``y2 < y1``.
    """
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) in xyxy format, got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {boxes.dtype}")
    bad = ~torch.isfinite(boxes).all(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"{name} has NaN or inf values, first at row {row}: {boxes[row].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"{name} must be xyxy with x2 >= x1 and y2 >= y1; row {row} is {boxes[row].tolist()} "
            "(yxyx or xywh boxes by mistake?)"
        )


# --------------------------------------------------------------------------- anchor grid
def feature_sizes(
    image_size: ImageSize, min_level: int = 3, max_level: int = 7
) -> list[tuple[int, int]]:
    """``(H, W)`` of pyramid levels ``min_level .. max_level`` for an input of ``image_size``.

    Each level halves the previous one with ceiling, ``(s - 1) // 2 + 1``, as a stride-2 conv or
    max-pool with "same" padding does; 512 gives 64, 32, 16, 8, 4 for P3-P7.
    """
    if not 1 <= min_level <= max_level:
        raise ValueError(f"need 1 <= min_level <= max_level, got {min_level}, {max_level}")
    h, w = _as_hw(image_size)
    sizes = []
    for level in range(1, max_level + 1):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        if level >= min_level:
            sizes.append((h, w))
    return sizes


def generate_anchors(
    image_size: ImageSize,
    min_level: int = 3,
    max_level: int = 7,
    num_scales: int = 3,
    aspect_ratios: Sequence[tuple[float, float]] = ASPECT_RATIOS,
    anchor_scale: float = 4.0,
) -> torch.Tensor:
    """All anchors of the pyramid as one ``(N, 4)`` float32 tensor of **xyxy** boxes in pixels.

    An anchor at level ``l`` with octave ``o`` (``o = 0, 1/3, 2/3``) and aspect ``(ax, ay)`` is
    ``anchor_scale * stride * 2**o * ax`` wide and ``... * ay`` high, centred at
    ``stride / 2 + k * stride`` (EfficientDet Sec. 3 / RetinaNet Sec. 4). Order, which must match
    the head's channel layout: level-major (P3 first), then row-major cells (y, then x), then
    the 9 anchors of a cell scale-major, aspect-minor. D0 at 512 has 49,104 anchors.

    Computed in float64 and rounded once, like the reference, so values agree bit for bit.
    """
    if num_scales < 1 or len(aspect_ratios) < 1:
        raise ValueError("need num_scales >= 1 and at least one aspect ratio")
    h, w = _as_hw(image_size)
    f64 = torch.float64
    octaves = torch.arange(num_scales, dtype=f64) / num_scales
    aspects = torch.tensor([tuple(map(float, a)) for a in aspect_ratios], dtype=f64)  # (R, 2)
    per_level = []
    for fh, fw in feature_sizes((h, w), min_level, max_level):
        stride_y, stride_x = h / fh, w / fw
        # (S*R,) half sizes, scale-major then aspect
        base = anchor_scale * 2.0 ** octaves[:, None]  # (S, 1)
        half_w = (base * stride_x * aspects[None, :, 0] / 2.0).reshape(-1)
        half_h = (base * stride_y * aspects[None, :, 1] / 2.0).reshape(-1)
        cy = torch.arange(stride_y / 2, h, stride_y, dtype=f64)  # (H,)
        cx = torch.arange(stride_x / 2, w, stride_x, dtype=f64)  # (W,)
        cy, cx = cy[:, None, None], cx[None, :, None]  # broadcast to (H, W, A)
        boxes = torch.stack(
            torch.broadcast_tensors(cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1
        )  # (H, W, A, 4)
        per_level.append(boxes.reshape(-1, 4))
    return torch.cat(per_level).float()


@lru_cache(maxsize=16)
def _cached_anchors(size: tuple[int, int], min_level: int, max_level: int, num_scales: int,
                    aspect_ratios: tuple, anchor_scale: float) -> torch.Tensor:
    return generate_anchors(size, min_level, max_level, num_scales, aspect_ratios, anchor_scale)


def anchors_for(model: torch.nn.Module, size: ImageSize) -> torch.Tensor:
    """The **xyxy** anchors of a detector's ``model.config`` for an input of ``size`` (cached).

    Training, evaluation and prediction all ask for the same few grids; the cache keeps one
    copy of each (16 at most). Treat the returned tensor as read-only.
    """
    c = model.config
    return _cached_anchors(_as_hw(size), c.min_level, c.max_level, c.num_scales,
                           tuple(map(tuple, c.aspect_ratios)), c.anchor_scale)


# --------------------------------------------------------------------------- IoU and box coding
def pairwise_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of **xyxy** boxes, ``(N, 4)`` x ``(M, 4)`` -> ``(N, M)``, unchecked.

    :func:`box_iou` is the checked version; matching and NMS call this one, which runs
    :func:`effnet_tutorial.fast.kernels.pairwise_iou` (same values) while
    :func:`effnet_tutorial.fast.enabled`.
    """
    if fast.enabled():
        return fast.kernels.pairwise_iou(boxes_a, boxes_b)
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (N, M, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (N, M): width x height
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])  # (N,)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    # Boxes that do not touch have IoU 0, also when both have zero area (0 / 0).
    return torch.where(inter > 0, inter / union, torch.zeros_like(inter))


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: **xyxy** ``(N, 4)`` and ``(M, 4)`` -> ``(N, M)``.

    ``IoU = |A ∩ B| / |A ∪ B|``; pairs that do not overlap get exactly 0 (also zero-area boxes).
    """
    check_boxes(boxes_a, "boxes_a")
    check_boxes(boxes_b, "boxes_b")
    return pairwise_iou(boxes_a, boxes_b)


def _centers_sizes(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """xyxy -> ``(yc, xc, h, w)``, with the reference's arithmetic (``y1 + h / 2``)."""
    x1, y1, x2, y2 = boxes.unbind(dim=-1)
    h, w = y2 - y1, x2 - x1
    return y1 + h / 2.0, x1 + w / 2.0, h, w


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Offsets ``(ty, tx, th, tw)`` of **xyxy** ``boxes`` relative to **xyxy** ``anchors``.

    Faster R-CNN's parametrisation without scale factors, as in EfficientDet::

        ty = (yc - yc_a) / h_a,  tx = (xc - xc_a) / w_a,  th = log(h / h_a),  tw = log(w / w_a)

    with ``1e-7`` added to all four sizes first. ``boxes`` and ``anchors`` are ``(N, 4)`` and
    paired row by row; returns ``(N, 4)`` codes in ``[ty, tx, th, tw]`` order.
    """
    check_boxes(boxes, "boxes")
    check_boxes(anchors, "anchors")
    if boxes.shape != anchors.shape:
        raise ValueError(
            f"boxes and anchors are paired row by row, got shapes {tuple(boxes.shape)} and "
            f"{tuple(anchors.shape)}"
        )
    return _encode(boxes, anchors)


def _encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    yc_a, xc_a, h_a, w_a = _centers_sizes(anchors)
    yc, xc, h, w = _centers_sizes(boxes)
    h_a, w_a, h, w = h_a + BOX_CODER_EPS, w_a + BOX_CODER_EPS, h + BOX_CODER_EPS, w + BOX_CODER_EPS
    return torch.stack(
        [(yc - yc_a) / h_a, (xc - xc_a) / w_a, torch.log(h / h_a), torch.log(w / w_a)], dim=-1
    )


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: ``(N, 4)`` codes ``[ty, tx, th, tw]`` + **xyxy** anchors
    -> ``(N, 4)`` **xyxy** boxes.

    ``w = exp(tw) * w_a``, ``xc = tx * w_a + xc_a`` (same for y); no clamp on the exponent,
    as in effdet's ``decode_box_outputs``. Works on any leading batch shape ``(..., 4)``.
    """
    if codes.shape[-1] != 4 or anchors.shape[-1] != 4:
        raise ValueError(
            f"codes and anchors need a last dimension of 4, got {tuple(codes.shape)} and "
            f"{tuple(anchors.shape)}"
        )
    ax1, ay1, ax2, ay2 = anchors.unbind(dim=-1)
    yc_a, xc_a = (ay1 + ay2) / 2, (ax1 + ax2) / 2
    h_a, w_a = ay2 - ay1, ax2 - ax1
    ty, tx, th, tw = codes.unbind(dim=-1)
    w, h = torch.exp(tw) * w_a, torch.exp(th) * h_a
    yc, xc = ty * h_a + yc_a, tx * w_a + xc_a
    return torch.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], dim=-1)


# --------------------------------------------------------------------------- matching
def match_anchors(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """For each anchor, the index of the ground-truth box it learns from, or ``-1`` (background).

    ``anchors`` ``(N, 4)`` and ``gt_boxes`` ``(M, 4)`` are **xyxy**. Rules (effdet / automl
    ``ArgMaxMatcher`` with equal thresholds, so there is no ignore band):

    1. an anchor takes the box it overlaps most if that IoU is ``>= threshold``, else ``-1``;
       among equal IoUs the lowest box index wins;
    2. every box then claims its own best anchor (the first one among ties), even below the
       threshold, so tiny or odd-shaped boxes are never left without a positive. When two boxes
       claim the same anchor, the lower box index wins.

    Returns an ``(N,)`` int64 tensor.
    """
    check_boxes(anchors, "anchors")
    check_boxes(gt_boxes, "gt_boxes")
    return _match(anchors, gt_boxes, threshold)


def best_anchor_iou(boxes: torch.Tensor, anchors: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Each box's highest IoU with any anchor, ``(M,)``.

    A box whose best IoU is below the matching threshold (0.5) still gets one positive anchor, by
    force (rule 2 of :func:`match_anchors`), but that anchor's shape is far from the box's: the
    regression has to cover a large offset, and the box's class is learnt from one anchor only.
    The share of such boxes says how much of a dataset the anchors fit. Boxes are compared in
    chunks of ``chunk``, so that a large set does not build an ``(M, N)`` matrix at once.
    """
    check_boxes(boxes, "boxes")
    check_boxes(anchors, "anchors")
    if len(boxes) == 0:
        return boxes.new_zeros(0)
    return torch.cat([pairwise_iou(part, anchors).max(dim=1).values for part in boxes.split(chunk)])


def _match(anchors: torch.Tensor, gt_boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """:func:`match_anchors` without the input checks."""
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matches = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0:
        return matches
    iou = pairwise_iou(gt_boxes, anchors)  # (M, N): same layout as the reference
    best_iou, best_gt = iou.max(dim=0)  # per anchor
    matches = torch.where(best_iou >= threshold, best_gt, matches)
    # Force-match: each box's best anchor; lowest box index wins a contested anchor.
    best_anchor = iou.argmax(dim=1)  # (M,)
    forced = torch.full((num_anchors,), num_gt, dtype=torch.long, device=anchors.device)
    forced = forced.scatter_reduce(0, best_anchor, torch.arange(num_gt, device=anchors.device),
                                   reduce="amin")
    return torch.where(forced < num_gt, forced, matches)


class AnchorTargets(NamedTuple):
    """Training targets for every anchor (one image, or a batch with a leading ``B``).

    * ``cls_targets``: ``(N,)`` int64, 0-based class of the matched box, ``-1`` for background.
    * ``box_targets``: ``(N, 4)`` float codes ``[ty, tx, th, tw]``, zeros for background.
    * ``num_positives``: float scalar (``(B,)`` when batched), anchors with a matched box.
    """

    cls_targets: torch.Tensor
    box_targets: torch.Tensor
    num_positives: torch.Tensor


def _check_labels(gt_labels: torch.Tensor, num_boxes: int) -> None:
    if not isinstance(gt_labels, torch.Tensor) or gt_labels.ndim != 1:
        raise ValueError(f"gt_labels must be a 1-D tensor, got {getattr(gt_labels, 'shape', None)}")
    if gt_labels.shape[0] != num_boxes:
        raise ValueError(f"got {num_boxes} boxes but {gt_labels.shape[0]} labels")
    if gt_labels.is_floating_point() and not torch.equal(gt_labels, gt_labels.round()):
        raise ValueError("gt_labels must be whole numbers (0-based class ids, -1 for padding)")
    if (gt_labels < -1).any():
        raise ValueError("gt_labels must be 0-based class ids, or -1 for padding rows")


def assign_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    threshold: float = 0.5,
) -> AnchorTargets:
    """Per-anchor class and box targets for one image.

    ``anchors`` ``(N, 4)`` and ``gt_boxes`` ``(M, 4)`` are **xyxy** pixels; ``gt_labels`` ``(M,)``
    holds 0-based classes, and rows labelled ``-1`` (padding) are dropped first. Matching is
    :func:`match_anchors`; positives get their box's class and :func:`encode_boxes` offsets.
    An image without boxes gives all background and ``num_positives = 0``.
    """
    check_boxes(anchors, "anchors")
    return _assign(anchors, gt_boxes, gt_labels, threshold)


def _assign(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
            threshold: float) -> AnchorTargets:
    """:func:`assign_targets` with the anchors already checked (once per batch)."""
    check_boxes(gt_boxes, "gt_boxes")
    _check_labels(gt_labels, gt_boxes.shape[0])
    valid = gt_labels >= 0
    gt_boxes, gt_labels = gt_boxes[valid], gt_labels[valid].long()
    matches = _match(anchors, gt_boxes, threshold)
    positive = matches >= 0
    safe = matches.clamp(min=0)
    cls_targets = torch.where(positive, gt_labels[safe] if len(gt_labels) else matches, -1)
    box_targets = torch.zeros_like(anchors)
    if positive.any():
        box_targets[positive] = _encode(gt_boxes[matches[positive]], anchors[positive])
    return AnchorTargets(cls_targets, box_targets, positive.sum().float())


def assign_targets_batch(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor | Sequence[torch.Tensor],
    gt_labels: torch.Tensor | Sequence[torch.Tensor],
    threshold: float = 0.5,
) -> AnchorTargets:
    """:func:`assign_targets` for a batch: targets ``(B, N)``, ``(B, N, 4)`` and ``(B,)``.

    ``gt_boxes`` is either a list of ``(M_i, 4)`` **xyxy** tensors, one per image, or a padded
    ``(B, M, 4)`` tensor; ``gt_labels`` the matching list of ``(M_i,)`` or padded ``(B, M)``
    tensor, with ``-1`` on padding rows (whose boxes are ignored, whatever they hold).
    """
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"got boxes for {len(gt_boxes)} images but labels for {len(gt_labels)}")
    check_boxes(anchors, "anchors")  # once for the batch, not once per image
    per_image = []
    for boxes, labels in zip(gt_boxes, gt_labels):
        if isinstance(labels, torch.Tensor):  # padding rows may hold any box: zero them first
            boxes = torch.where((labels >= 0)[:, None], boxes, torch.zeros_like(boxes))
        per_image.append(_assign(anchors, boxes, labels, threshold))
    if not per_image:
        raise ValueError("the batch is empty")
    return AnchorTargets(*(torch.stack(t) for t in zip(*per_image)))


def targets_by_level(
    cls_targets: torch.Tensor,
    box_targets: torch.Tensor,
    feat_sizes: Sequence[tuple[int, int]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split flat batched targets into per-level maps, the layout the loss reads.

    ``cls_targets`` ``(B, N)`` -> list of ``(B, H, W, A)``; ``box_targets`` ``(B, N, 4)`` -> list
    of ``(B, H, W, A*4)`` (codes ``[ty, tx, th, tw]`` of anchor ``a`` at channels
    ``4a .. 4a+3``), one entry per ``(H, W)`` of ``feat_sizes`` (see :func:`feature_sizes`).
    ``A`` is inferred from ``N``.
    """
    if cls_targets.ndim != 2 or box_targets.ndim != 3 or box_targets.shape[-1] != 4:
        raise ValueError(
            "need batched targets cls (B, N) and box (B, N, 4), got "
            f"{tuple(cls_targets.shape)} and {tuple(box_targets.shape)}"
        )
    batch, num_anchors = cls_targets.shape
    cells = sum(h * w for h, w in feat_sizes)
    if box_targets.shape[:2] != cls_targets.shape or num_anchors % cells:
        raise ValueError(
            f"{num_anchors} anchors do not fit {cells} cells of levels {list(feat_sizes)} "
            f"(box targets {tuple(box_targets.shape)})"
        )
    per_cell = num_anchors // cells
    cls_levels, box_levels, start = [], [], 0
    for h, w in feat_sizes:
        stop = start + h * w * per_cell
        cls_levels.append(cls_targets[:, start:stop].reshape(batch, h, w, per_cell))
        box_levels.append(box_targets[:, start:stop].reshape(batch, h, w, per_cell * 4))
        start = stop
    return cls_levels, box_levels
