"""Plots the book and the command line share: training curves, detections, precision-recall.

Only this module (and the notebooks) import matplotlib's pyplot; models and math never do.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file written by the trainer."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(records: Sequence[dict], ax=None):
    """Loss against step (and COCO AP against step where evaluations were logged).

    Every logged point has a marker, so a short run's one or two points show.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    steps = [r["step"] for r in records if "loss" in r]
    marker = dict(marker="o", markersize=3)
    ax.plot(steps, [r["loss"] for r in records if "loss" in r], label="total loss", lw=1, **marker)
    ax.plot(steps, [r["cls_loss"] for r in records if "loss" in r], label="class loss", lw=1,
            **marker)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    evals = [r for r in records if "AP" in r]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["AP"] for r in evals], "o-", color="black",
                 label="AP")
        ax2.set_ylabel("COCO AP@[.5:.95]")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper center")
    return ax


def draw_detections(image: torch.Tensor | np.ndarray, detections: dict,
                    class_names: Sequence[str] | None = None, score_threshold: float = 0.3,
                    ax=None):
    """Draw **xyxy** boxes with labels and scores over an image (``(3, H, W)`` or ``(H, W, 3)``)."""
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


def plot_precision_recall(stats: dict, class_names: Sequence[str] | None = None, iou_index: int = 0,
                          ax=None):
    """Precision against recall per class at one IoU threshold (index 0 is IoU 0.5), from
    :func:`~effnet_tutorial.evaluate.coco_evaluate`'s result.
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


def fusion_weights(model: torch.nn.Module) -> list[list[tuple[str, list[str], np.ndarray]]]:
    """The normalised BiFPN fusion weights of a detector: for each BiFPN layer, for each node,
    ``(node name, input names, weights)``, with the weights as the node applies them
    (:meth:`~effnet_tutorial.bifpn.WeightedFusion.normalized_weights`; all ones for a plain sum).

    Node names follow the paper's figure: ``P6_td`` ... ``P3_out`` on the top-down path and
    ``P4_out`` ... ``P7_out`` on the bottom-up path; inputs are named the same way, with the layer's
    own inputs as ``P3_in`` ... ``P7_in``.
    """
    layers = []
    for cell in model.fpn.cells:
        names = [f"P{cell.min_level + i}_in" for i in range(cell.num_levels)]
        rows = []
        for k, node in enumerate(cell.nodes):
            level = node.spec.level
            top_down = k < cell.num_levels - 1  # the first L - 1 nodes; the last of them is P3_out
            name = f"P{level}_td" if top_down and level != cell.min_level else f"P{level}_out"
            w = node.fusion.normalized_weights()
            w = (np.ones(len(node.spec.inputs)) if w is None
                 else w.detach().float().cpu().numpy())
            rows.append((name, [names[i] for i in node.spec.inputs], w))
            names.append(name)
        layers.append(rows)
    return layers


def plot_fusion_weights(model: torch.nn.Module, layer: int = -1, ax=None):
    """Stacked bars: how much each input contributes to each node of one BiFPN layer."""
    import matplotlib.pyplot as plt

    rows = fusion_weights(model)[layer]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.2))
    kinds = ("same level, from the layer input", "same level, intermediate", "from another level")
    colours = dict(zip(kinds, ("tab:blue", "tab:green", "tab:orange")))
    used = set()
    for x, (name, inputs, w) in enumerate(rows):
        bottom = 0.0
        for src, wi in zip(inputs, w):
            same = src[:src.index("_")] == name[:name.index("_")]
            kind = kinds[2] if not same else kinds[0] if src.endswith("_in") else kinds[1]
            ax.bar(x, wi, bottom=bottom, color=colours[kind], edgecolor="white",
                   label=kind if kind not in used else None)
            ax.text(x, bottom + wi / 2, src.replace("_", "\n", 1) if wi > 0.12 else "", ha="center",
                    va="center", fontsize=6, color="white")
            used.add(kind)
            bottom += wi
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, fontsize=8)
    ax.set_ylabel("normalised fusion weight")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


class LivePlot:
    """A loss-and-AP figure that redraws in place in a notebook while training runs.

    Call :meth:`update` with the records so far (:func:`read_metrics` of the trainer's
    ``metrics.jsonl``, plus the evaluation being made, from the trainer's ``on_eval`` callback);
    in a notebook the figure replaces itself, elsewhere nothing is shown.
    The stored notebook keeps the last drawing.
    """

    def __init__(self) -> None:
        self.handle = None

    def update(self, records: Sequence[dict]) -> None:
        """Redraw from training records (steps with ``loss``, evaluations with ``AP``)."""
        import matplotlib.pyplot as plt

        try:
            from IPython.display import display
        except ImportError:  # not in IPython: nothing to draw into
            return
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
        steps = [r for r in records if "loss" in r and r.get("event") is None]
        a.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1)
        a.set(xlabel="step", ylabel="training loss", yscale="log")
        evals = [r for r in records if r.get("event") == "eval"]
        b.plot([r["train_time"] / 60 for r in evals], [r["AP"] for r in evals], "o-")
        b.set(xlabel="training time (min)", ylabel="val AP@[.5:.95]", ylim=(0, 1))
        for ax in (a, b):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
