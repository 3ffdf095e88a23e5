"""What a detector got right and wrong on an image: each detection judged against the ground truth.

AP sums a detector up in one number; looking at its mistakes says what to change. Above a score
threshold, detections are taken from the highest score down, as COCO's matching takes them
(:mod:`effnet_tutorial.coco_ap`): a detection that overlaps a not-yet-found object of its class with
IoU >= 0.5 is a true positive and finds that object. Every other detection is a false positive of
one kind (after Hoiem et al.'s analysis of detector errors):

* ``"duplicate"``: IoU >= 0.5 with an object of its class that a higher-scored detection found;
* ``"wrong class"``: IoU >= 0.5 with an object of another class;
* ``"poor box"``: overlaps an object (IoU >= 0.1) but not enough;
* ``"background"``: overlaps no object.

Objects that no detection found are misses.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from .anchors import box_iou

KINDS: tuple[str, ...] = ("correct", "duplicate", "wrong class", "poor box", "background")


@dataclass
class JudgedDetections:
    """One image's detections above the threshold, highest score first, each with its kind.

    ``boxes`` ``(K, 4)`` xyxy, ``scores`` ``(K,)``, ``labels`` ``(K,)``, ``kinds`` (one of
    ``KINDS`` each); ``missed``: indices of the ground-truth objects no detection found.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    kinds: list[str]
    missed: list[int]

    def counts(self) -> Counter:
        """How many detections of each kind, and the misses under ``"missed"``."""
        c = Counter({k: 0 for k in KINDS})
        c.update(self.kinds)
        c["missed"] = len(self.missed)
        return c


def judge_detections(detections: dict, target: dict, score_threshold: float = 0.3,
                     iou_threshold: float = 0.5) -> JudgedDetections:
    """Judge ``detections`` (``boxes``, ``scores``, ``labels``) against ``target`` (``boxes``,
    ``labels``), both in the same pixels (:func:`~effnet_tutorial.inference.predict`'s output and
    a dataset's target)."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    keep = detections["scores"] >= score_threshold
    order = detections["scores"][keep].argsort(descending=True, stable=True)
    boxes = detections["boxes"][keep][order].float()
    scores, labels = detections["scores"][keep][order], detections["labels"][keep][order]
    gt_boxes, gt_labels = target["boxes"].float(), target["labels"]
    iou = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else torch.zeros(len(boxes), len(gt_boxes))
    found = torch.zeros(len(gt_boxes), dtype=torch.bool)
    kinds = []
    for k in range(len(boxes)):
        same = gt_labels == labels[k]
        free = torch.where(same & ~found, iou[k], torch.full_like(iou[k], -1.0))
        if len(gt_boxes) and free.max() >= iou_threshold:
            found[int(free.argmax())] = True
            kinds.append("correct")
        elif len(gt_boxes) and (iou[k] * same).max() >= iou_threshold:
            kinds.append("duplicate")
        elif len(gt_boxes) and iou[k].max() >= iou_threshold:
            kinds.append("wrong class")
        elif len(gt_boxes) and iou[k].max() >= 0.1:
            kinds.append("poor box")
        else:
            kinds.append("background")
    missed = [int(i) for i in torch.nonzero(~found).flatten()]
    return JudgedDetections(boxes, scores, labels, kinds, missed)


#: Colours of :func:`draw_judged`, correct green, false positives red, misses orange.
COLOURS = {"correct": "#2ca02c", "duplicate": "#d62728", "wrong class": "#d62728",
           "poor box": "#d62728", "background": "#d62728", "missed": "#ff7f0e"}


def draw_judged(image: torch.Tensor, judged: JudgedDetections, target: dict,
                class_names: list[str] | None = None, ax=None):
    """Draw an image with its judged detections, lowest score first (so the best box and its
    label end on top), false positives labelled with their kind, and the missed objects dashed.
    A box that overlaps a better-scored one (IoU >= 0.5) has its label below it, so that the two
    labels do not cover each other."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    array = image.permute(1, 2, 0) if image.ndim == 3 and image.shape[0] == 3 else image
    ax.imshow(array.clamp(0, 255).to(torch.uint8).numpy())
    for i in judged.missed:
        x1, y1, x2, y2 = target["boxes"][i].tolist()
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls="--", lw=1.5,
                                   color=COLOURS["missed"]))
    overlap = box_iou(judged.boxes, judged.boxes) if len(judged.kinds) else None
    for k in reversed(range(len(judged.kinds))):  # highest score first in judged: draw it last
        x1, y1, x2, y2 = judged.boxes[k].tolist()
        kind, colour = judged.kinds[k], COLOURS[judged.kinds[k]]
        name = class_names[int(judged.labels[k])] if class_names else str(int(judged.labels[k]))
        text = f"{name} {float(judged.scores[k]):.2f}" + ("" if kind == "correct" else f" ({kind})")
        below = bool(k) and bool((overlap[k, :k] >= 0.5).any())
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=colour))
        ax.text(x1, y2 if below else y1, text, color="white", fontsize=7,
                va="top" if below else "bottom", bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0))
    ax.axis("off")
    return ax
