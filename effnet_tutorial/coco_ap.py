"""COCO's box AP computed by hand, step by step, to the same numbers as pycocotools' COCOeval.

COCO's headline detection number is produced by ``pycocotools.cocoeval.COCOeval``
(:mod:`~effnet_tutorial.evaluate` runs it). This module writes out what it computes, in plain
NumPy, so that every step can be read, plotted and checked:

1. **IoU** (:func:`box_iou_xywh`) between each detection and each ground truth box of one image
   and one category, both ``[x, y, width, height]``. A *crowd* ground truth (``iscrowd`` = 1, one
   box around a group of objects) uses the intersection over the detection's own area instead.
2. **Greedy matching** (:func:`match_image`) at one IoU threshold: detections are taken highest
   score first (ties keep their input order) and each one takes the still-unmatched ground truth
   it overlaps most, if that IoU reaches the threshold; each ground truth is matched at most once
   (a crowd may absorb any number of detections). A matched detection is a true positive, an
   unmatched one a false positive. Ground truths that do not *count* (crowds, and in an area
   range the objects outside it) are *ignored*: a detection matched to one is neither a hit nor a
   false positive, and an unmatched detection whose own box area lies outside the range is
   ignored too. Only the ``max_dets`` best detections of each image take part (1, 10 or 100).
3. **Precision and recall** (:func:`precision_recall`): the detections of all images, pooled and
   sorted by score, give after each one ``recall = TP / G`` (``G`` the ground truths that count)
   and ``precision = TP / (TP + FP)``.
4. **The envelope** (:func:`precision_envelope`): precision replaced by the best precision at
   any *higher* recall, which makes it non-increasing.
5. **101-point sampling** (:func:`sample_precision`) of the envelope at recall 0, 0.01, ..., 1:
   the first point whose recall reaches each threshold, 0 beyond the largest recall reached.
   Their mean is the AP of one category at one threshold (:func:`average_precision`).
6. **Averages** (:func:`evaluate_by_hand`): AP is the mean over the categories and the ten IoU
   thresholds 0.50:0.05:0.95 (:data:`IOU_THRESHOLDS`); AP50 and AP75 fix one threshold; AP_small,
   AP_medium and AP_large repeat everything in an :data:`AREA_RANGES` bucket. Recall (AR1, AR10,
   AR100, ...) is the final recall, averaged the same way, with 1, 10 or 100 detections per
   image (:data:`MAX_DETS`).

The area buckets are decided by the ground truth's ``area`` field, which in COCO is the pixel area
of the object's *mask*, not of its box, and by a detection's *box* area; both ends of a range are
inclusive, as in COCOeval (an area of exactly ``32**2`` is small and medium). A category without
any ground truth that counts has an undefined AP (``-1`` in COCOeval's arrays) and is left out of
the means; a summary with nothing to average is ``-1``.

COCOeval's conventions are kept where they change numbers: the IoU threshold is capped at
``1 - 1e-10``, among equal IoUs the later ground truth wins, a detection prefers any ground truth
that counts over an ignored one, precision is ``TP / (TP + FP + eps)`` with ``eps`` the spacing of
1.0 (``numpy.spacing(1)``), and images and categories are taken in order of their ids. The only
departure is that the bookkeeping uses booleans rather than annotation ids, so it needs no ids at
all (COCOeval records "no match" as id 0 and so miscounts a ground truth whose id is 0).

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .evaluate import STAT_NAMES

#: The ten IoU thresholds 0.50, 0.55, ..., 0.95, computed as COCOeval computes them.
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
#: The 101 recall points 0.00, 0.01, ..., 1.00 at which precision is sampled.
RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)
#: Detections per image that the evaluation keeps, the best by score (AR1, AR10 and AR100).
MAX_DETS: tuple[int, ...] = (1, 10, 100)
#: Object-area buckets in pixels, both ends inclusive. Everything, small (up to 32^2), medium
#: (32^2 to 96^2) and large (from 96^2); ``1e5 ** 2`` stands for "no upper limit".
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
    "large": (96.0 ** 2, 1e5 ** 2)}


def box_iou_xywh(det_boxes: np.ndarray, gt_boxes: np.ndarray,
                 gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of every detection with every ground truth, ``(D, G)``, boxes ``[x, y, w, h]``.

    For a crowd ground truth the ratio is intersection over the *detection's* area, so a
    detection of one member of a crowd overlaps the crowd fully. Computed in float64 in the same
    order of operations as pycocotools' C code, so matches at a threshold agree to the last bit.
    """
    d = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    crowd = (np.zeros(len(g), bool) if gt_crowd is None
             else np.asarray(gt_crowd, dtype=bool).reshape(-1))
    if len(crowd) != len(g):
        raise ValueError(f"gt_crowd has {len(crowd)} entries for {len(g)} ground-truth boxes")
    w = (np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2])
         - np.maximum(d[:, None, 0], g[None, :, 0]))
    h = (np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3])
         - np.maximum(d[:, None, 1], g[None, :, 1]))
    inter = w * h
    det_area = (d[:, 2] * d[:, 3])[:, None]
    union = np.where(crowd[None, :], det_area, det_area + (g[:, 2] * g[:, 3])[None, :] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


@dataclass(frozen=True)
class ImageMatch:
    """The outcome of matching one image's detections of one category at one IoU threshold.

    ``scores``, ``true_positive`` and ``ignored`` describe the kept detections (at most
    ``max_dets``), highest score first; ``gt_match`` gives, for each ground truth in input order,
    the index into ``scores`` of the detection that matched it, or -1; ``num_gt`` counts the
    ground truths that count (not crowds, inside the area range).
    """

    scores: np.ndarray
    true_positive: np.ndarray
    ignored: np.ndarray
    gt_match: np.ndarray
    num_gt: int


def _as_boxes(boxes: np.ndarray | Sequence, what: str) -> np.ndarray:
    """``(N, 4)`` float64 boxes with finite coordinates and sizes that are not negative."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} must be an (N, 4) array of [x, y, width, height], got shape "
                         f"{arr.shape}")
    if not np.isfinite(arr).all() or (arr[:, 2:] < 0).any():
        raise ValueError(f"{what} must be finite [x, y, width, height] with width and height >= 0")
    return arr


def match_image(det_boxes: np.ndarray | Sequence, det_scores: np.ndarray | Sequence,
                gt_boxes: np.ndarray | Sequence, iou_threshold: float, *,
                gt_areas: np.ndarray | Sequence | None = None,
                gt_crowd: np.ndarray | Sequence | None = None,
                area_range: tuple[float, float] = AREA_RANGES["all"],
                max_dets: int = 100) -> ImageMatch:
    """Greedy matching of one image's detections to its ground truth (one category, one IoU).

    Boxes are ``[x, y, w, h]``. ``gt_areas`` (default: the boxes' areas) decide which ground
    truths lie in ``area_range``; ``gt_crowd`` marks crowd regions. Detections are sorted by
    score, highest first, with a stable sort (ties keep their order), and cut to ``max_dets``.
    Each detection, in that order, takes the unmatched ground truth of highest IoU ``>=
    iou_threshold``, preferring ground truths that count over ignored ones. Because earlier
    detections never depend on later ones, cutting to ``max_dets`` before or after matching gives
    the same matches.
    """
    dets = _as_boxes(det_boxes, "det_boxes")
    gts = _as_boxes(gt_boxes, "gt_boxes")
    scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(dets):
        raise ValueError(f"{len(dets)} detection boxes but {len(scores)} scores")
    if not np.isfinite(scores).all():
        raise ValueError("detection scores must be finite")
    if not isinstance(max_dets, int) or isinstance(max_dets, bool) or max_dets < 1:
        raise ValueError(f"max_dets must be a positive integer, got {max_dets!r}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold!r}")
    areas = gts[:, 2] * gts[:, 3] if gt_areas is None else np.asarray(gt_areas, np.float64)
    crowd = np.zeros(len(gts), bool) if gt_crowd is None else np.asarray(gt_crowd, bool)
    if areas.shape != (len(gts),) or crowd.shape != (len(gts),):
        raise ValueError("gt_areas and gt_crowd need one entry per ground-truth box")
    lo, hi = area_range
    gt_ignored = crowd | (areas < lo) | (areas > hi)

    order = np.argsort(-scores, kind="mergesort")[:max_dets]  # stable: ties keep input order
    dets, scores = dets[order], scores[order]
    gt_order = np.argsort(gt_ignored, kind="mergesort")  # ground truths that count come first
    iou = box_iou_xywh(dets, gts[gt_order], crowd[gt_order])
    ignored_sorted, crowd_sorted = gt_ignored[gt_order], crowd[gt_order]

    threshold = min(iou_threshold, 1 - 1e-10)
    taken = np.zeros(len(gts), bool)
    det_gt = np.full(len(dets), -1)
    for d in range(len(dets)):
        best, best_iou = -1, threshold
        for g in range(len(gts)):
            if taken[g] and not crowd_sorted[g]:
                continue  # each ground truth is matched once (a crowd any number of times)
            if best > -1 and not ignored_sorted[best] and ignored_sorted[g]:
                break  # matched one that counts: ignored ones (sorted last) cannot take it
            if iou[d, g] < best_iou:
                continue
            best, best_iou = g, iou[d, g]  # ">=": among equal IoUs the later one wins
        if best > -1:
            taken[best] = True
            det_gt[d] = best
    matched = det_gt > -1
    det_area = dets[:, 2] * dets[:, 3]
    ignored = (det_area < lo) | (det_area > hi)  # an unmatched detection outside the range
    ignored[matched] = ignored_sorted[det_gt[matched]]  # a matched one: as its ground truth
    gt_match = np.full(len(gts), -1)
    gt_match[gt_order[det_gt[matched]]] = np.nonzero(matched)[0]
    return ImageMatch(scores=scores, true_positive=matched & ~ignored, ignored=ignored,
                      gt_match=gt_match, num_gt=int((~gt_ignored).sum()))


def precision_recall(matches: Sequence[ImageMatch]) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision after each detection, all images pooled, highest score first.

    Returns ``(recall, precision, num_gt)``. Ignored detections are left out (they change neither
    count). Ties in score across images keep the order of ``matches``, then of each image's list,
    as COCOeval's stable sort does. Precision is ``TP / (TP + FP + eps)`` as in COCOeval.
    """
    num_gt = sum(m.num_gt for m in matches)
    if not matches:
        return np.zeros(0), np.zeros(0), 0
    scores = np.concatenate([m.scores for m in matches])
    tp = np.concatenate([m.true_positive for m in matches])
    keep = ~np.concatenate([m.ignored for m in matches])
    order = np.argsort(-scores, kind="mergesort")
    tp, keep = tp[order], keep[order]
    tp_sum = np.cumsum(tp[keep]).astype(np.float64)
    fp_sum = np.cumsum(~tp[keep]).astype(np.float64)
    recall = tp_sum / num_gt if num_gt else np.full(len(tp_sum), np.nan)
    precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    return recall, precision, num_gt


def precision_envelope(precision: np.ndarray) -> np.ndarray:
    """Each precision replaced by the largest precision at the same or a later point.

    The result never increases with recall: the best precision one can have at *at least* this
    recall, which removes the zigzag that every false positive draws.
    """
    p = np.asarray(precision, dtype=np.float64)
    return np.maximum.accumulate(p[::-1])[::-1] if len(p) else p.copy()


def sample_precision(recall: np.ndarray, precision: np.ndarray,
                     recall_thresholds: np.ndarray = RECALL_THRESHOLDS) -> np.ndarray:
    """The envelope of ``precision`` at each recall threshold (101 points by default).

    At threshold ``r`` it takes the first point whose recall is ``>= r``; where the detections
    never reach ``r`` the precision is 0.
    """
    recall = np.asarray(recall, dtype=np.float64)
    envelope = precision_envelope(precision)
    index = np.searchsorted(recall, recall_thresholds, side="left")
    reached = index < len(recall)
    out = np.zeros(len(recall_thresholds))
    out[reached] = envelope[index[reached]]
    return out


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP of one category at one IoU threshold: the mean of the 101 sampled precisions."""
    return float(np.mean(sample_precision(recall, precision)))


def _check_dataset(dataset: Mapping) -> None:
    """The sections COCO's evaluation reads, with sound ids, boxes, areas and crowd flags."""
    for key in ("images", "annotations", "categories"):
        if key not in dataset or not isinstance(dataset[key], list):
            raise ValueError(f"the dataset needs a list {key!r} (COCO's instances format)")
    image_ids = {img.get("id") for img in dataset["images"]}
    category_ids = {cat.get("id") for cat in dataset["categories"]}
    for k, ann in enumerate(dataset["annotations"]):
        where = f"annotation {k} (id {ann.get('id')!r})"
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"{where} refers to image {ann.get('image_id')!r}, not in 'images'")
        if ann.get("category_id") not in category_ids:
            raise ValueError(f"{where} has category {ann.get('category_id')!r}, not in "
                             "'categories'")
        _as_boxes([ann.get("bbox", [])], f"the bbox of {where}")
        area = ann.get("area", 0.0)
        if not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
            raise ValueError(f"{where} has area {area!r}; an area is a number >= 0")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise ValueError(f"{where} has iscrowd {ann.get('iscrowd')!r}; it must be 0 or 1")


def _check_results(results: Sequence[Mapping], dataset: Mapping) -> None:
    """Each result names a known image and category and has a sound box and a finite score."""
    image_ids = {img["id"] for img in dataset["images"]}
    category_ids = {cat["id"] for cat in dataset["categories"]}
    for k, res in enumerate(results):
        missing = {"image_id", "category_id", "bbox", "score"} - set(res)
        if missing:
            raise ValueError(f"result {k} lacks {sorted(missing)} (a COCO result has image_id, "
                             "category_id, bbox [x, y, w, h] and score)")
        if res["image_id"] not in image_ids:
            raise ValueError(f"result {k} refers to image {res['image_id']!r}, which is not in "
                             "the dataset")
        if res["category_id"] not in category_ids:
            raise ValueError(f"result {k} has category {res['category_id']!r}, which is not in "
                             "the dataset (COCOeval would silently skip it)")
        _as_boxes([res["bbox"]], f"the bbox of result {k}")
        if not isinstance(res["score"], (int, float)) or not math.isfinite(res["score"]):
            raise ValueError(f"result {k} has score {res['score']!r}; a score is a finite number")


def _summary(values: np.ndarray) -> float:
    """COCOeval's mean over the defined entries (``> -1``), or -1 when there are none."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def evaluate_by_hand(dataset: Mapping, results: Sequence[Mapping]) -> dict:
    """COCO box evaluation written out: the twelve summary numbers and the arrays behind them.

    ``dataset`` is a COCO instances dict (``images``, ``annotations`` with ``bbox`` and, optional,
    ``area`` (default: the box's) and ``iscrowd`` (default 0), ``categories``); ``results`` the
    detections in COCO's results format (``image_id``, ``category_id``, ``bbox`` ``[x, y, w,
    h]``, ``score``). Returns the :data:`~effnet_tutorial.evaluate.STAT_NAMES` numbers, and
    ``precision`` ``(T, R, K, A, M)`` and ``recall`` ``(T, K, A, M)`` laid out as COCOeval's
    (IoU thresholds, recall points, categories by id, :data:`AREA_RANGES`, :data:`MAX_DETS`;
    -1 where undefined). Raises ``ValueError`` for malformed input.
    """
    _check_dataset(dataset)
    _check_results(results, dataset)
    image_ids = sorted(img["id"] for img in dataset["images"])
    category_ids = sorted(cat["id"] for cat in dataset["categories"])
    gts: dict[tuple, list[Mapping]] = {}
    dts: dict[tuple, list[Mapping]] = {}
    for ann in dataset["annotations"]:
        gts.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    for res in results:
        dts.setdefault((res["image_id"], res["category_id"]), []).append(res)

    areas = list(AREA_RANGES.values())
    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(category_ids), len(areas), \
        len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for k, cat in enumerate(category_ids):
        # images where this category has ground truth or detections (the others add nothing)
        present = [i for i in image_ids if (i, cat) in gts or (i, cat) in dts]
        for a, area_range in enumerate(areas):
            for m, max_dets in enumerate(MAX_DETS):
                for t, threshold in enumerate(IOU_THRESHOLDS):
                    matches = []
                    for i in present:
                        g, d = gts.get((i, cat), []), dts.get((i, cat), [])
                        matches.append(match_image(
                            [r["bbox"] for r in d], [r["score"] for r in d],
                            [x["bbox"] for x in g], float(threshold),
                            gt_areas=[x.get("area", x["bbox"][2] * x["bbox"][3]) for x in g],
                            gt_crowd=[bool(x.get("iscrowd", 0)) for x in g],
                            area_range=area_range, max_dets=max_dets))
                    rc, pr, num_gt = precision_recall(matches)
                    if num_gt == 0:
                        continue  # no ground truth that counts: undefined, left at -1
                    recall[t, k, a, m] = rc[-1] if len(rc) else 0.0
                    precision[t, :, k, a, m] = sample_precision(rc, pr)

    def ap(area: str = "all", iou: float | None = None) -> float:
        p = precision[:, :, :, list(AREA_RANGES).index(area), MAX_DETS.index(100)]
        return _summary(p if iou is None else p[IOU_THRESHOLDS == iou])

    def ar(max_dets: int = 100, area: str = "all") -> float:
        return _summary(recall[:, :, list(AREA_RANGES).index(area), MAX_DETS.index(max_dets)])

    values = (ap(), ap(iou=0.5), ap(iou=0.75), ap("small"), ap("medium"), ap("large"),
              ar(1), ar(10), ar(100), ar(100, "small"), ar(100, "medium"), ar(100, "large"))
    return {**dict(zip(STAT_NAMES, values)), "precision": precision, "recall": recall,
            "category_ids": category_ids}


__all__ = ["AREA_RANGES", "IOU_THRESHOLDS", "MAX_DETS", "RECALL_THRESHOLDS", "ImageMatch",
           "average_precision", "box_iou_xywh", "evaluate_by_hand", "match_image",
           "precision_envelope", "precision_recall", "sample_precision"]
