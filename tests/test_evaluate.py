"""COCO evaluation against pycocotools on hand-made predictions with known AP."""
import json

import pytest
import torch

from effnet_tutorial import create_model
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.shapes import write_coco_dataset
from effnet_tutorial.evaluate import coco_evaluate, evaluate_model, to_coco_results

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_coco_dataset(root, "val", 6, seed=5, height=64, width=96, max_objects=4)
    return CocoDetection(root / "images" / "val", root / "annotations" / "instances_val.json")


def _ground_truth_as_detections(ds, keep=lambda label: True):
    dets, ids = [], []
    for i in range(len(ds)):
        t = ds.target(i)
        mask = torch.tensor([keep(int(label)) for label in t["labels"]], dtype=torch.bool)
        dets.append({"boxes": t["boxes"][mask], "scores": torch.ones(int(mask.sum())),
                     "labels": t["labels"][mask]})
        ids.append(int(t["image_id"]))
    return dets, ids


def test_perfect_predictions_score_one(dataset):
    dets, ids = _ground_truth_as_detections(dataset)
    stats = coco_evaluate(dataset.annotation_file, to_coco_results(dets, ids, dataset.category_ids))
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_missing_one_class_halves_the_mean_over_two_classes(tmp_path):
    ann = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30],
                            "area": 900, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 8, "bbox": [50, 50, 40, 40],
                            "area": 1600, "iscrowd": 0}],
           "categories": [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    results = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.9}]
    stats = coco_evaluate(path, results)
    assert stats["AP"] == pytest.approx(0.5)
    assert stats["per_class_ap"][3] == pytest.approx(1.0)
    assert stats["per_class_ap"][8] == pytest.approx(0.0)
    # A box shifted to IoU 0.58 counts at IoU 0.5 and 0.55 only: 2 of the 10 thresholds.
    shifted = [{"image_id": 1, "category_id": 3, "bbox": [10, 10 + 8, 30, 30], "score": 0.9}]
    iou = (30 * 22) / (2 * 900 - 30 * 22)
    assert 0.55 < iou < 0.6
    assert coco_evaluate(path, shifted)["per_class_ap"][3] == pytest.approx(0.2)


def test_results_use_xywh_and_the_datasets_category_ids():
    det = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 7.0]]), "scores": torch.tensor([0.5]),
            "labels": torch.tensor([1])}]
    assert to_coco_results(det, [42], [3, 8]) == [
        {"image_id": 42, "category_id": 8, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.5}]


def test_no_predictions_score_zero(dataset):
    assert coco_evaluate(dataset.annotation_file, [])["AP"] == 0.0


def test_a_model_evaluates_end_to_end_and_writes_results(dataset, tmp_path):
    model = create_model("tf_efficientdet_d0", num_classes=4, fpn_channels=16, fpn_repeats=1,
                         head_repeats=1)
    stats = evaluate_model(model, dataset, 64, batch_size=3, results_file=tmp_path / "res.json")
    assert 0.0 <= stats["AP"] <= 1.0 and set(stats["per_class_ap"]) == {1, 2, 3, 4}
    results = json.loads((tmp_path / "res.json").read_text())
    assert results and all(len(r["bbox"]) == 4 for r in results)
    # original pixels, clipped to the image
    assert max(r["bbox"][0] + r["bbox"][2] for r in results) <= 96 + 1e-3
