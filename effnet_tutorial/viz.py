"""Plots the book and the command line share: training curves, detections, precision-recall.

Only this module (and the notebooks) import matplotlib's pyplot; models and math never do.

Introduced in Part IV, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch


def read_metrics(path: Union[str, Path]) -> list[dict]:
    """The records of a ``metrics.jsonl`` file written by the trainer.

    Introduced in Part IV, *Training EfficientDet-D0*.
    """
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(records: Sequence[dict], ax=None):
    """Loss against step (and COCO AP against step where evaluations were logged).

    Introduced in Part IV, *Training EfficientDet-D0*.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    steps = [r["step"] for r in records if "loss" in r]
    ax.plot(steps, [r["loss"] for r in records if "loss" in r], label="total loss", lw=1)
    ax.plot(steps, [r["cls_loss"] for r in records if "loss" in r], label="class loss", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    evals = [r for r in records if "AP" in r]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["AP"] for r in evals], "o-", color="black", label="AP")
        ax2.set_ylabel("COCO AP@[.5:.95]")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper center")
    return ax


def draw_detections(image: Union[torch.Tensor, np.ndarray], detections: dict,
                    class_names: Optional[Sequence[str]] = None, score_threshold: float = 0.3,
                    ax=None):
    """Draw **xyxy** boxes with labels and scores over an image (``(3, H, W)`` or ``(H, W, 3)``).

    Introduced in Part IV, *Training EfficientDet-D0*.
    """
    import matplotlib.pyplot as plt

    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.shape[0] == 3 and array.ndim == 3:
        array = array.transpose(1, 2, 0)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.clip(array, 0, 255).astype(np.uint8))
    colours = plt.cm.tab10.colors
    for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                 detections["labels"].tolist()):
        if score < score_threshold:
            continue
        x1, y1, x2, y2 = box
        c = colours[int(label) % len(colours)]
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=c, lw=1.5))
        name = class_names[int(label)] if class_names else str(int(label))
        ax.text(x1, y1, f"{name} {score:.2f}", color="white", fontsize=7,
                bbox=dict(facecolor=c, alpha=0.7, pad=1, lw=0))
    ax.axis("off")
    return ax


def plot_precision_recall(stats: dict, class_names: Optional[Sequence[str]] = None, iou_index: int = 0,
                          ax=None):
    """Precision against recall per class at one IoU threshold (index 0 is IoU 0.5), from
    :func:`~effnet_tutorial.evaluate.coco_evaluate`'s result.

    Introduced in Part IV, *Training EfficientDet-D0*.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    if stats.get("precision") is None:
        ax.set_title("no detections")
        return ax
    recall = stats["recall_thresholds"]
    for k, cat in enumerate(stats["category_ids"]):
        p = stats["precision"][iou_index, :, k, 0, -1]
        if (p > -1).any():
            name = class_names[k] if class_names else str(cat)
            ax.plot(recall, np.where(p > -1, p, np.nan), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax
