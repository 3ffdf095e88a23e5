"""COCO evaluation through pycocotools, the way the papers measure detectors.

Predictions are turned into COCO's results format (``[x, y, width, height]`` boxes in original
image pixels, the dataset's own category ids, one entry per detection) and scored by
``pycocotools.cocoeval.COCOeval``: AP averaged over IoU 0.50:0.05:0.95 (the headline number),
AP50, AP75 and AP for small, medium and large objects, plus per-class AP and precision-recall
curves read from the same evaluation.

The ground truth handed to pycocotools is the file as
:func:`~effnet_tutorial.data.coco.read_coco_annotations` checked it (so it has every ``area`` and
``iscrowd`` COCOeval reads), with the annotations renumbered 1..N: COCOeval records a match by
the ground truth's id and takes id 0 for "no match", so a file whose annotation ids start at 0
would otherwise score a wrong AP.
Evaluation refuses, before predicting anything (:func:`check_evaluation`), an empty dataset or
one without annotations, a batch size below 1, and a model with fewer classes than the dataset
has categories; a model with more classes is scored on the dataset's categories (its label ``k``
is the dataset's ``k``-th category id), and detections of the labels beyond them are left out,
with a warning.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .anchors import anchors_for
from .data.coco import CocoDetection, read_coco_annotations
from .data.transforms import eval_transforms
from .extras import require
from .postprocess import postprocess_detections
from .utils import evaluating

if TYPE_CHECKING:
    from pycocotools.coco import COCO

#: The names of COCOeval's twelve summary numbers, in its order (AP averages IoU 0.50 to 0.95).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def to_coco_results(detections: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int], min_score: float = 0.001) -> list[dict]:
    """COCO results entries from per-image detections (**xyxy** original pixels, 0-based labels).

    Detections scoring below ``min_score`` are left out, as the reference evaluator does, and so
    are labels with no category (``label >= len(category_ids)``, from a model with more classes).
    """
    results = []
    for det, image_id in zip(detections, image_ids):
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                  det["labels"].tolist()):
            if score < min_score or label >= len(category_ids):
                continue
            results.append({"image_id": int(image_id), "category_id": int(category_ids[label]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def _ground_truth(annotation_file: str | Path) -> COCO:
    """pycocotools' ``COCO`` of the checked file, annotations renumbered 1..N (see the module)."""
    from pycocotools.coco import COCO

    data = read_coco_annotations(annotation_file)
    if not data["annotations"]:
        raise ValueError(f"{annotation_file}: no annotations to evaluate against (AP is "
                         "undefined on images without objects)")
    annotations = [{**ann, "id": k} for k, ann in enumerate(data["annotations"], start=1)]
    gt = COCO()
    gt.dataset = {**data, "annotations": annotations}
    gt.createIndex()
    return gt


def _check_results(results: list[dict], gt: COCO, annotation_file: str | Path) -> None:
    """Results name only images of the ground truth (pycocotools would only ``assert`` it)."""
    unknown = {r["image_id"] for r in results} - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"results refer to image id(s) {sorted(unknown)[:10]} that are not in "
                         f"{annotation_file}")


def coco_evaluate(annotation_file: str | Path, results: list[dict],
                  verbose: bool = False) -> dict:
    """Run COCOeval (bbox) on a results list; returns the stats, per-class AP and PR curves.

    Returned keys: the twelve :data:`STAT_NAMES`, ``per_class_ap`` (category id -> AP@[.5:.95],
    NaN for a class with no ground truth), and ``precision`` (COCOeval's array, indexed
    ``[iou, recall, class, area, max_dets]``) with ``recall_thresholds`` and ``category_ids``.
    With no results at all every AP is 0. The file is read and checked as the dataset reader
    does (:class:`~effnet_tutorial.data.coco.CocoFormatError` if it is broken).
    """
    require("pycocotools", purpose="COCO evaluation")
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext()
    with quiet:
        gt = _ground_truth(annotation_file)
        if not results:
            cats = sorted(gt.getCatIds())
            return {**{k: 0.0 for k in STAT_NAMES}, "per_class_ap": {c: 0.0 for c in cats},
                    "precision": None, "recall_thresholds": None, "category_ids": cats}
        _check_results(results, gt, annotation_file)
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
            "recall_thresholds": np.asarray(ev.params.recThrs),
            "category_ids": list(ev.params.catIds)}


def _check_batching(dataset: CocoDetection, image_size: int, batch_size: int) -> None:
    """A non-empty dataset, and a batch size and image size that are positive integers."""
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(dataset) == 0:
        raise ValueError(f"{dataset.annotation_file}: the dataset has no images to evaluate on")


def _check_classes(model: torch.nn.Module, dataset: CocoDetection) -> None:
    """The model predicts every category of the dataset; warn about labels it has beyond them."""
    have, need = model.num_classes, dataset.num_classes
    if have < need:
        raise ValueError(
            f"the model predicts {have} classes but {dataset.annotation_file} has {need} "
            "categories: evaluate a model trained on this dataset's categories (num_classes="
            f"{need})")
    if have > need:
        warnings.warn(
            f"the model predicts {have} classes and {dataset.annotation_file} has {need} "
            f"categories: labels 0..{need - 1} are scored as its category ids "
            f"{dataset.category_ids[:10]}{'...' if need > 10 else ''} and detections of labels "
            f"{need}..{have - 1} are left out", stacklevel=4)


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: CocoDetection, image_size: int,
                    batch_size: int = 8, soft_nms: bool = False,
                    device: torch.device | None = None) -> tuple[list[dict], list[int]]:
    """Detections for every image of a COCO-format dataset, in original image pixels.

    Raises ``ValueError`` before predicting anything for an empty dataset or ``batch_size < 1``.
    """
    _check_batching(dataset, image_size, batch_size)
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


def check_evaluation(model: torch.nn.Module, dataset: CocoDetection, image_size: int,
                     batch_size: int = 8, category_ids: Sequence[int] | None = None) -> None:
    """Raise ``ValueError`` now for what :func:`evaluate_model` would refuse, without predicting.

    Call it before training on the validation set, so a bad one fails at once rather than after
    the first epoch: a batch or image size below 1, a dataset without images or annotations, a
    model with fewer classes than its categories (more warn). ``category_ids``, if given, are the
    category ids the model's labels stand for (the training set's): they must be the dataset's,
    or label ``k`` would be scored as another category.
    """
    _check_batching(dataset, image_size, batch_size)
    if dataset.num_annotations == 0:
        raise ValueError(f"{dataset.annotation_file}: no annotations to evaluate against (AP is "
                         "undefined on images without objects)")
    _check_classes(model, dataset)
    if category_ids is not None and list(category_ids) != dataset.category_ids:
        raise ValueError(f"the model's labels stand for category ids {list(category_ids)[:10]} "
                         f"but {dataset.annotation_file} has {dataset.category_ids[:10]}: "
                         "evaluate on a split with the training set's categories")


def evaluate_model(model: torch.nn.Module, dataset: CocoDetection, image_size: int,
                   batch_size: int = 8, soft_nms: bool = False,
                   results_file: str | Path | None = None) -> dict:
    """Predict on ``dataset`` and score with COCOeval; optionally write the results JSON.

    Checks for pycocotools and runs :func:`check_evaluation` before predicting anything.
    """
    require("pycocotools", purpose="COCO evaluation")
    check_evaluation(model, dataset, image_size, batch_size)
    detections, image_ids = predict_dataset(model, dataset, image_size, batch_size, soft_nms)
    results = to_coco_results(detections, image_ids, dataset.category_ids)
    if results_file is not None:
        Path(results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(results_file).write_text(json.dumps(results))
    return coco_evaluate(dataset.annotation_file, results)
