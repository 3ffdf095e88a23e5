"""COCO evaluation through pycocotools, the way the papers measure detectors.

Predictions are turned into COCO's results format (``[x, y, width, height]`` boxes in original
image pixels, the dataset's own category ids, one entry per detection) and scored by
``pycocotools.cocoeval.COCOeval``: AP averaged over IoU 0.50:0.05:0.95 (the headline number),
AP50, AP75 and AP for small, medium and large objects, plus per-class AP and precision-recall
curves read from the same evaluation.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch

from .anchors import anchors_for
from .data.coco import CocoDetection
from .data.transforms import eval_transforms
from .extras import require
from .utils import evaluating
from .postprocess import postprocess_detections

#: The names of COCOeval's twelve summary numbers, in its order (AP averages IoU 0.50 to 0.95).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def to_coco_results(detections: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int], min_score: float = 0.001) -> list[dict]:
    """COCO results entries from per-image detections (**xyxy** original pixels, 0-based labels).

    Detections scoring below ``min_score`` are left out, as the reference evaluator does.
    """
    results = []
    for det, image_id in zip(detections, image_ids):
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                  det["labels"].tolist()):
            if score < min_score:
                continue
            results.append({"image_id": int(image_id), "category_id": int(category_ids[label]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def coco_evaluate(annotation_file: str | Path, results: list[dict],
                  verbose: bool = False) -> dict:
    """Run COCOeval (bbox) on a results list; returns the stats, per-class AP and PR curves.

    Returned keys: the twelve :data:`STAT_NAMES`, ``per_class_ap`` (category id -> AP@[.5:.95],
    NaN for a class with no ground truth), and ``precision`` (COCOeval's array, indexed
    ``[iou, recall, class, area, max_dets]``) with ``recall_thresholds`` and ``category_ids``.
    With no results at all every AP is 0.
    """
    require("pycocotools", purpose="COCO evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext()
    with quiet:
        gt = COCO(str(annotation_file))
        if not results:
            cats = sorted(gt.getCatIds())
            return {**{k: 0.0 for k in STAT_NAMES}, "per_class_ap": {c: 0.0 for c in cats},
                    "precision": None, "recall_thresholds": None, "category_ids": cats}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (T, R, K, A, M)
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[cat] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    return {**stats, "per_class_ap": per_class, "precision": precision,
            "recall_thresholds": np.asarray(ev.params.recThrs), "category_ids": list(ev.params.catIds)}


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: CocoDetection, image_size: int,
                    batch_size: int = 8, soft_nms: bool = False,
                    device: torch.device | None = None) -> tuple[list[dict], list[int]]:
    """Detections for every image of a COCO-format dataset, in original image pixels."""
    device = device or next(model.parameters()).device
    transform = eval_transforms(image_size)
    anchors = anchors_for(model, (image_size, image_size)).to(device)
    detections, image_ids = [], []
    with evaluating(model):
        for start in range(0, len(dataset), batch_size):
            items = [transform(dataset.read_image(i), dataset.target(i))
                     for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.stack([im for im, _ in items]).to(device)
            cls_out, box_out = model(images)
            scales = torch.stack([t["scale"] for _, t in items]).to(device)
            sizes = torch.stack([t["orig_size"] for _, t in items]).to(device)
            dets = postprocess_detections(cls_out, box_out, anchors, model.num_classes,
                                          soft_nms=soft_nms, image_scales=scales, image_sizes=sizes)
            detections += [{k: v.cpu() for k, v in d.items()} for d in dets]
            image_ids += [int(t["image_id"]) for _, t in items]
    return detections, image_ids


def evaluate_model(model: torch.nn.Module, dataset: CocoDetection, image_size: int,
                   batch_size: int = 8, soft_nms: bool = False,
                   results_file: str | Path | None = None) -> dict:
    """Predict on ``dataset`` and score with COCOeval; optionally write the results JSON.

    Checks for pycocotools before predicting anything.
    """
    require("pycocotools", purpose="COCO evaluation")
    detections, image_ids = predict_dataset(model, dataset, image_size, batch_size, soft_nms)
    results = to_coco_results(detections, image_ids, dataset.category_ids)
    if results_file is not None:
        Path(results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(results_file).write_text(json.dumps(results))
    return coco_evaluate(dataset.annotation_file, results)
