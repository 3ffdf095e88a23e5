"""From head outputs to detections: top-k, box decoding, (soft-)NMS, at most 100 boxes.

The steps and constants are those of the reference code (automl's ``MAX_DETECTION_POINTS`` and
effdet's ``max_detection_points``; the EfficientDet paper does not state them): keep the 5,000
highest-scoring anchor x class pairs over all levels, decode their boxes, suppress duplicates per
class with non-maximum suppression (NMS) at IoU 0.5, keep the best 100. RetinaNet (Lin et al.,
2017, *Focal Loss for Dense Object Detection*, Sec. 4.1) differs: at most 1,000 predictions per
level after a score threshold of 0.05, then NMS over the merged levels. The paper's final version
(arXiv v7, Sec. 5.1) and automl's evaluation use Gaussian soft-NMS instead (Bodla et al., 2017),
which lowers the scores of overlapping boxes rather than deleting them.

Formats: head outputs are NCHW lists, one per level, ``(B, A*C, H, W)`` logits (channel
``a*C + c``) and ``(B, A*4, H, W)`` codes ``[ty, tx, th, tw]``; anchors are **xyxy** ``(N, 4)``
from :func:`effnet_tutorial.anchors.generate_anchors`; every box in and out is **xyxy** pixels;
labels are 0-based.

Exactness details, from the reference (effdet ``bench.py``, ``anchors.py``, ``soft_nms.py``):
top-k runs over the flattened ``anchor * C + class`` index of all levels; NMS suppresses a box
when IoU > threshold with a higher-scoring box of the same class; results are ordered by
descending score; clipping to the image happens before NMS, rescaling to original pixels after.

In the book: Chapter 10, *Anchors, IoU, matching and box coding*.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import fast
from .anchors import check_boxes, decode_boxes, pairwise_iou
from .extras import require


# --------------------------------------------------------------------------- NMS
def _check_scored_boxes(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
    check_boxes(boxes, "boxes")
    if scores.shape != (boxes.shape[0],) or labels.shape != (boxes.shape[0],):
        raise ValueError(
            f"need scores and labels of shape ({boxes.shape[0]},) for {boxes.shape[0]} boxes, got "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")


def _torchvision_batched_nms():
    """torchvision's C++ ``batched_nms`` if torchvision is installed, else ``None``."""
    try:
        from torchvision.ops import batched_nms as tv_batched_nms
    except ImportError:  # torchvision is optional: the loop below does the same work
        return None
    return tv_batched_nms


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float = 0.5,
    max_output: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Greedy per-class NMS: indices of the kept boxes, by descending score.

    ``boxes`` ``(K, 4)`` **xyxy**, ``scores`` ``(K,)``, ``labels`` ``(K,)`` (any ints; boxes of
    different labels never suppress each other). Walk the boxes from the highest score down;
    keep a box unless a kept box of its class overlaps it with IoU > ``iou_threshold``. With
    ``max_output``, only the first ``max_output`` indices are returned.

    ``backend="python"`` runs that walk as written in
    :func:`~effnet_tutorial.postprocess.nms_reference` (the book's version);
    ``"torchvision"`` calls ``torchvision.ops.batched_nms``, a C++ kernel that selects the same
    boxes (tested, up to the order of exactly tied scores) in about half the time on 5,000
    boxes; ``"auto"`` (the default) uses torchvision when it is installed and
    :func:`effnet_tutorial.fast.enabled`, the Python walk otherwise.
    """
    _check_scored_boxes(boxes, scores, labels)
    if backend not in ("auto", "python", "torchvision"):
        raise ValueError(f"backend must be 'auto', 'python' or 'torchvision', got {backend!r}")
    wanted = backend == "torchvision" or (backend == "auto" and fast.enabled())
    kernel = _torchvision_batched_nms() if wanted else None
    if backend == "torchvision" and kernel is None:
        require("torchvision", purpose="backend='torchvision'")
    if kernel is None:
        return nms_reference(boxes, scores, labels, iou_threshold, max_output)
    keep = kernel(boxes, scores, labels, iou_threshold)
    return keep if max_output is None else keep[:max_output]


def nms_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float = 0.5,
    max_output: int | None = None,
) -> torch.Tensor:
    """The greedy per-class NMS walk of :func:`batched_nms`, in plain PyTorch, to be read.

    One IoU row per kept box against all boxes; with ``max_output`` the walk stops after that
    many boxes: the same first ``max_output`` indices, much sooner.
    """
    _check_scored_boxes(boxes, scores, labels)
    order = scores.argsort(descending=True, stable=True)
    boxes, labels = boxes[order], labels[order]
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    limit = len(order) if max_output is None else min(max_output, len(order))
    while len(keep) < limit:
        remaining = alive.nonzero()
        if len(remaining) == 0:
            break
        top = int(remaining[0])  # highest score still alive
        keep.append(top)
        iou = pairwise_iou(boxes[top : top + 1], boxes)[0]
        alive &= ~((iou > iou_threshold) & (labels == labels[top]))
        alive[top] = False
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_output: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class Gaussian soft-NMS: ``(indices, new_scores)``, by descending new score.

    ``boxes`` ``(K, 4)`` **xyxy**, ``scores`` ``(K,)``, ``labels`` ``(K,)``. Repeatedly take the
    highest-scoring remaining box, then multiply the score of every remaining box of its class by
    ``exp(-IoU**2 / sigma)`` (the Gaussian penalty of Bodla et al., 2017) and drop boxes whose
    score fell to ``score_threshold`` or below. (effdet passes ``iou_threshold=0.3`` too, but the
    Gaussian rule never reads it.) Kept scores never increase, so ``max_output`` stops early
    without changing the first ``max_output`` results.
    """
    _check_scored_boxes(boxes, scores, labels)
    scores = scores.clone().float()
    alive = torch.ones(len(scores), dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    kept_scores: list[torch.Tensor] = []
    limit = len(scores) if max_output is None else min(max_output, len(scores))
    while len(keep) < limit and alive.any():
        top = int(torch.where(alive, scores, float("-inf")).argmax())
        keep.append(top)
        kept_scores.append(scores[top].clone())
        iou = pairwise_iou(boxes[top : top + 1], boxes)[0]
        same_class = labels == labels[top]
        scores = torch.where(same_class, scores * torch.exp(-(iou**2) / sigma), scores)
        alive &= scores > score_threshold
        alive[top] = False
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores[:0]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device), torch.stack(kept_scores)


# --------------------------------------------------------------------------- detections
def select_top_k(
    cls_outputs: Sequence[torch.Tensor],
    box_outputs: Sequence[torch.Tensor],
    num_classes: int,
    k: int = 5000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best (anchor, class) pairs per image over all levels.

    Flattens every level to ``(B, H*W*A, C)`` logits and ``(B, H*W*A, 4)`` codes, joins the levels
    (so the anchor index follows :func:`~effnet_tutorial.anchors.generate_anchors`), and takes
    ``topk`` over the flat ``anchor * C + class`` index. Returns ``(logits, codes, anchor_idx,
    classes)`` of shapes ``(B, k)``, ``(B, k, 4)``, ``(B, k)``, ``(B, k)``; ``k`` is capped at
    the number of pairs. While :func:`effnet_tutorial.fast.enabled`, CPU inputs go through
    :func:`effnet_tutorial.fast.kernels.top_k_two_stage` instead (the same selection).
    """
    if len(cls_outputs) != len(box_outputs) or not cls_outputs:
        raise ValueError(
            f"need one tensor per level, got {len(cls_outputs)} and {len(box_outputs)}"
        )
    batch = cls_outputs[0].shape[0]
    for level, (c, b) in enumerate(zip(cls_outputs, box_outputs)):
        if c.ndim != 4 or b.ndim != 4 or c.shape[1] % num_classes or b.shape[1] % 4:
            raise ValueError(
                f"level {level}: need NCHW outputs (B, A*C, H, W) and (B, A*4, H, W) with "
                f"C={num_classes}, got {tuple(c.shape)} and {tuple(b.shape)}"
            )
        if c.shape[1] // num_classes != b.shape[1] // 4 or c.shape[0] != batch:
            raise ValueError(f"level {level}: class {tuple(c.shape)} and box {tuple(b.shape)} "
                             "outputs disagree on batch or anchors per cell")
    num_anchors = sum(c.shape[1] // num_classes * c.shape[2] * c.shape[3] for c in cls_outputs)
    k = min(k, num_anchors * num_classes)
    found = None
    if fast.enabled() and cls_outputs[0].device.type == "cpu" and 0 < k <= num_anchors:
        found = fast.kernels.top_k_two_stage(cls_outputs, num_classes, k)
    if found is None:  # one topk over every logit, flattened as effdet flattens them
        logits = torch.cat(
            [c.permute(0, 2, 3, 1).reshape(batch, -1, num_classes) for c in cls_outputs], 1)
        found = logits.reshape(batch, -1).topk(k, dim=1)  # over anchor * C + class
    top_logits, top_index = found
    anchor_idx, classes = top_index // num_classes, top_index % num_classes
    codes = torch.cat([b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for b in box_outputs], 1)
    top_codes = codes.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))
    # topk ranks NaN above every number, so checking the selection finds NaN logits anywhere
    # without scanning all anchors x classes (the selected box codes are checked too).
    if torch.isnan(top_logits).any() or torch.isnan(top_codes).any():
        raise ValueError("head outputs contain NaN")
    return top_logits, top_codes, anchor_idx, classes


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clamp **xyxy** boxes ``(..., 4)`` into the image ``[0, width] x [0, height]``."""
    upper = boxes.new_tensor([width, height, width, height])
    return torch.min(boxes.clamp(min=0), upper)


def postprocess_detections(
    cls_outputs: Sequence[torch.Tensor],
    box_outputs: Sequence[torch.Tensor],
    anchors: torch.Tensor,
    num_classes: int,
    max_detection_points: int = 5000,
    max_detections: int = 100,
    iou_threshold: float = 0.5,
    soft_nms: bool = False,
    image_scales: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Detections for each image: ``[{"boxes": (K, 4), "scores": (K,), "labels": (K,)}, ...]``.

    ``boxes`` are **xyxy**, ``labels`` 0-based, ``K <= max_detections``, ordered by descending
    score (sigmoid of the logit, or the soft-NMS score). ``anchors`` are the **xyxy** anchors
    of the input size. Optional letterbox undo, per image ``i``:

    * ``image_sizes`` ``(B, 2)``: the **original** image size as ``(H, W)`` in pixels; boxes are
      clipped to ``(H, W) / scale`` in input pixels before NMS;
    * ``image_scales`` ``(B,)``: original pixels per input pixel (effdet ``img_scale``); boxes
      are multiplied by it after NMS.
    """
    check_boxes(anchors, "anchors")
    logits, codes, anchor_idx, classes = select_top_k(
        cls_outputs, box_outputs, num_classes, max_detection_points)
    results = []
    for i in range(logits.shape[0]):
        boxes = decode_boxes(codes[i].float(), anchors[anchor_idx[i]])
        scale = None if image_scales is None else image_scales[i].float()
        if image_sizes is not None:
            h, w = (image_sizes[i].float() / (1.0 if scale is None else scale)).tolist()
            boxes = clip_boxes(boxes, h, w)
        scores = logits[i].float().sigmoid()
        if soft_nms:
            keep, scores = batched_soft_nms(boxes, scores, classes[i], max_output=max_detections)
        else:
            keep = batched_nms(boxes, scores, classes[i], iou_threshold, max_detections)
            scores = scores[keep]
        boxes = boxes[keep] if scale is None else boxes[keep] * scale
        results.append({"boxes": boxes, "scores": scores, "labels": classes[i][keep]})
    return results


#: Short alias of :func:`postprocess_detections` (import it by name: ``from
#: effnet_tutorial.postprocess import postprocess``; at the package top level the name would
#: shadow this module).
postprocess = postprocess_detections


def to_effdet_layout(
    detections: Sequence[dict[str, torch.Tensor]], max_detections: int = 100
) -> torch.Tensor:
    """Pack :func:`postprocess_detections` results as effdet's ``(B, max_detections, 6)`` tensor.

    Rows are ``[x1, y1, x2, y2, score, label + 1]`` (effdet's 1-based classes), zero-padded.
    """
    rows = []
    for det in detections:
        packed = torch.cat(
            [det["boxes"], det["scores"][:, None], det["labels"][:, None].float() + 1.0], dim=1
        )[:max_detections]
        pad = packed.new_zeros(max_detections - len(packed), 6)
        rows.append(torch.cat([packed, pad]))
    return torch.stack(rows)
