"""COCO AP by hand (effnet_tutorial.coco_ap) against pycocotools' COCOeval on toy sets."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from effnet_tutorial import coco_ap
from effnet_tutorial.evaluate import STAT_NAMES

pytest.importorskip("pycocotools")


def dataset(images, annotations, categories=(1,)):
    """A COCO dict: ``images`` ids, ``annotations`` (image, category, bbox[, area[, iscrowd]])."""
    anns = []
    for k, (image_id, cat, bbox, *rest) in enumerate(annotations, start=1):
        area = rest[0] if rest else bbox[2] * bbox[3]
        crowd = rest[1] if len(rest) > 1 else 0
        anns.append({"id": k, "image_id": image_id, "category_id": cat, "bbox": list(bbox),
                     "area": area, "iscrowd": crowd})
    return {"images": [{"id": i, "file_name": f"{i}.png", "height": 640, "width": 640}
                       for i in images],
            "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in categories]}


def results(*entries):
    """COCO results from (image, category, bbox, score)."""
    return [{"image_id": i, "category_id": c, "bbox": list(b), "score": s} for i, c, b, s in entries]


def cocoeval(data, dets):
    """pycocotools' stats, precision and recall for the same input (copied: loadRes edits it)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(data)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_same(data, dets):
    ours = coco_ap.evaluate_by_hand(data, dets)
    ev = cocoeval(data, dets)
    for name, value in zip(STAT_NAMES, ev.stats):
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(ours["precision"], ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["recall"], ev.eval["recall"], rtol=0, atol=1e-12)
    return ours


def test_constants_are_cocoevals():
    from pycocotools.cocoeval import Params

    p = Params(iouType="bbox")
    np.testing.assert_array_equal(coco_ap.IOU_THRESHOLDS, p.iouThrs)
    np.testing.assert_array_equal(coco_ap.RECALL_THRESHOLDS, p.recThrs)
    assert list(coco_ap.MAX_DETS) == p.maxDets
    assert list(coco_ap.AREA_RANGES) == p.areaRngLbl
    assert [list(r) for r in coco_ap.AREA_RANGES.values()] == p.areaRng


def test_perfect_detections_give_ap_one():
    data = dataset([1, 2], [(1, 1, (10, 10, 50, 40)), (2, 1, (100, 100, 20, 20))])
    dets = results((1, 1, (10, 10, 50, 40), 0.9), (2, 1, (100, 100, 20, 20), 0.8))
    ours = assert_same(data, dets)
    assert ours["AP"] == pytest.approx(1.0, abs=1e-12)


def test_one_false_positive_ranked_first():
    data = dataset([1], [(1, 1, (0, 0, 40, 40)), (1, 1, (100, 0, 40, 40))])
    dets = results((1, 1, (300, 300, 40, 40), 0.9), (1, 1, (0, 0, 40, 40), 0.8),
                   (1, 1, (102, 0, 40, 40), 0.7))
    assert_same(data, dets)


def test_ties_in_score_within_and_across_images():
    data = dataset([1, 2, 3], [(1, 1, (0, 0, 40, 40)), (2, 1, (0, 0, 40, 40)),
                               (3, 1, (50, 50, 30, 30))])
    dets = results((2, 1, (200, 200, 40, 40), 0.5), (1, 1, (0, 0, 40, 40), 0.5),
                   (2, 1, (0, 0, 40, 40), 0.5), (3, 1, (52, 50, 30, 30), 0.5),
                   (3, 1, (50, 50, 30, 30), 0.5), (1, 1, (5, 5, 40, 40), 0.5))
    assert_same(data, dets)


def test_several_classes_and_images_without_ground_truth():
    data = dataset([1, 2, 3, 4],
                   [(1, 1, (0, 0, 40, 40)), (1, 2, (50, 0, 60, 70)), (2, 2, (10, 10, 20, 20)),
                    (2, 3, (0, 0, 200, 150))],
                   categories=(1, 2, 3, 7))  # category 7 has no ground truth: left out
    dets = results((1, 1, (1, 1, 40, 40), 0.9), (1, 2, (50, 5, 60, 70), 0.6),
                   (2, 2, (12, 10, 20, 20), 0.7), (2, 3, (0, 0, 190, 150), 0.95),
                   (3, 1, (0, 0, 30, 30), 0.99), (4, 2, (5, 5, 30, 30), 0.3),
                   (4, 7, (5, 5, 30, 30), 0.3))
    ours = assert_same(data, dets)
    assert (ours["precision"][:, :, 3] == -1).all()


def test_one_detection_overlapping_two_ground_truths():
    data = dataset([1], [(1, 1, (0, 0, 40, 40)), (1, 1, (10, 0, 40, 40))])
    dets = results((1, 1, (5, 0, 40, 40), 0.9), (1, 1, (9, 0, 40, 40), 0.8),
                   (1, 1, (30, 30, 10, 10), 0.7))
    assert_same(data, dets)
    # equal IoU with both: COCOeval's loop lets the later ground truth win
    m = coco_ap.match_image([[5, 0, 40, 40]], [0.9], [[0, 0, 40, 40], [10, 0, 40, 40]], 0.5)
    assert m.gt_match.tolist() == [-1, 0]


def test_area_ranges_use_annotation_area_and_inclusive_ends():
    # box areas say "large", annotation areas (masks) say otherwise; 32**2 is small and medium
    data = dataset([1, 2], [(1, 1, (0, 0, 100, 100), 500.0), (1, 1, (200, 0, 50, 50), 32.0 ** 2),
                            (2, 1, (0, 0, 120, 120), 96.0 ** 2), (2, 1, (300, 300, 10, 10))])
    dets = results((1, 1, (0, 0, 100, 100), 0.9), (1, 1, (200, 0, 50, 50), 0.5),
                   (2, 1, (0, 0, 120, 120), 0.8), (2, 1, (400, 400, 20, 20), 0.7),
                   (2, 1, (500, 500, 100, 100), 0.6), (1, 1, (300, 300, 40, 40), 0.4))
    assert_same(data, dets)


def test_max_dets_cut_per_image():
    rng = np.random.default_rng(3)
    gts = [(1, 1, (float(x), 0.0, 30.0, 30.0)) for x in range(0, 600, 40)]
    data = dataset([1, 2], gts + [(2, 1, (0, 0, 50, 50))])
    dets = results(*[(1, 1, (x + rng.uniform(-8, 8), rng.uniform(-8, 8), 30, 30),
                      float(rng.uniform())) for (_, _, (x, *_)) in gts],
                   (2, 1, (0, 0, 50, 50), 0.1), (2, 1, (300, 300, 50, 50), 0.2))
    ours = assert_same(data, dets)
    assert ours["AR1"] < ours["AR10"] <= ours["AR100"]


def test_crowd_regions_absorb_detections():
    data = dataset([1], [(1, 1, (0, 0, 40, 40)), (1, 1, (100, 100, 200, 200), 40000.0, 1)])
    dets = results((1, 1, (0, 0, 40, 40), 0.9), (1, 1, (110, 110, 20, 20), 0.95),
                   (1, 1, (150, 150, 30, 30), 0.85), (1, 1, (500, 500, 30, 30), 0.8))
    assert_same(data, dets)


@pytest.mark.parametrize("seed", range(6))
def test_random_toy_sets(seed):
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for image in range(1, 6):
        for _ in range(rng.integers(0, 6)):
            box = (*rng.uniform(0, 400, 2), *rng.uniform(4, 160, 2))
            area = box[2] * box[3] * rng.uniform(0.5, 1.0)
            anns.append((image, int(rng.integers(1, 4)), box, area, int(rng.uniform() < 0.1)))
            for _ in range(rng.integers(0, 3)):  # jittered detections, some of the wrong class
                jitter = (*(np.array(box[:2]) + rng.normal(0, 0.15 * box[2], 2)),
                          box[2] * rng.uniform(0.7, 1.3), box[3] * rng.uniform(0.7, 1.3))
                cat = anns[-1][1] if rng.uniform() < 0.8 else int(rng.integers(1, 4))
                dets.append((image, cat, jitter, float(np.round(rng.uniform(), 1))))  # ties
        for _ in range(rng.integers(0, 4)):
            dets.append((image, int(rng.integers(1, 4)),
                         (*rng.uniform(0, 400, 2), *rng.uniform(4, 160, 2)), float(rng.uniform())))
    data = dataset(range(1, 6), anns, categories=(1, 2, 3))
    assert_same(data, results(*dets))


def test_many_detections_per_image():
    rng = np.random.default_rng(0)
    anns = [(1, 1, (*rng.uniform(0, 500, 2), *rng.uniform(8, 100, 2))) for _ in range(30)]
    dets = [(1, 1, (*np.array(b[:2]) + rng.normal(0, 5, 2), b[2], b[3]), float(rng.uniform()))
            for _, _, b in anns for _ in range(4)]  # 120 detections: 100 are kept
    assert_same(dataset([1], anns), results(*dets))


def test_pieces():
    rc = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    pr = np.array([1.0, 0.5, 2 / 3, 0.5, 0.6])
    np.testing.assert_array_equal(coco_ap.precision_envelope(pr), [1.0, 2 / 3, 2 / 3, 0.6, 0.6])
    sampled = coco_ap.sample_precision(rc, pr)
    assert sampled[0] == 1.0 and sampled[25] == 1.0 and sampled[26] == 2 / 3
    assert sampled[75] == 0.6 and (sampled[76:] == 0).all()
    assert coco_ap.average_precision(rc, pr) == pytest.approx(sampled.mean())
    iou = coco_ap.box_iou_xywh([[0, 0, 10, 10]], [[5, 0, 10, 10], [0, 0, 20, 20]], [False, True])
    np.testing.assert_allclose(iou, [[50 / 150, 1.0]])


def test_bad_input_is_refused():
    data = dataset([1], [(1, 1, (0, 0, 10, 10))])
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}
    with pytest.raises(ValueError, match="not in the dataset"):
        coco_ap.evaluate_by_hand(data, [{**good, "image_id": 9}])
    with pytest.raises(ValueError, match="category 5"):
        coco_ap.evaluate_by_hand(data, [{**good, "category_id": 5}])
    with pytest.raises(ValueError, match="lacks"):
        coco_ap.evaluate_by_hand(data, [{k: v for k, v in good.items() if k != "score"}])
    with pytest.raises(ValueError, match="width and height"):
        coco_ap.evaluate_by_hand(data, [{**good, "bbox": [0, 0, -1, 10]}])
    with pytest.raises(ValueError, match="finite number"):
        coco_ap.evaluate_by_hand(data, [{**good, "score": float("nan")}])
    with pytest.raises(ValueError, match="annotations"):
        coco_ap.evaluate_by_hand({"images": [], "categories": []}, [])
    bad = copy.deepcopy(data)
    bad["annotations"][0]["iscrowd"] = 2
    with pytest.raises(ValueError, match="iscrowd"):
        coco_ap.evaluate_by_hand(bad, [good])
    with pytest.raises(ValueError, match="max_dets"):
        coco_ap.match_image([[0, 0, 1, 1]], [1.0], [[0, 0, 1, 1]], 0.5, max_dets=0)
    with pytest.raises(ValueError, match="scores"):
        coco_ap.match_image([[0, 0, 1, 1]], [1.0, 0.5], [[0, 0, 1, 1]], 0.5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        coco_ap.match_image([[0, 0, 1]], [1.0], [[0, 0, 1, 1]], 0.5)


def test_no_results_gives_zero_where_ground_truth_counts():
    data = dataset([1], [(1, 1, (0, 0, 10, 10))])
    ours = coco_ap.evaluate_by_hand(data, [])
    assert ours["AP"] == 0.0 and ours["AR100"] == 0.0 and ours["AP_large"] == -1.0
