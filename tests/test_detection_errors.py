"""Each detection judged against the ground truth: correct, the four kinds of false positive, misses."""
import matplotlib
import pytest
import torch

from effnet_tutorial.detection_errors import KINDS, draw_judged, judge_detections

matplotlib.use("Agg")

TARGET = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 70, 70], [100, 100, 110, 110]]),
          "labels": torch.tensor([0, 1, 0])}


def detections(rows):
    t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    return {"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()}


def test_each_kind_of_error():
    det = detections([
        [0, 0, 10, 10, 0.9, 0],      # object 0, its class: correct
        [0, 0, 10, 9, 0.8, 0],       # object 0 again: duplicate
        [50, 50, 70, 70, 0.7, 2],    # object 1, another class: wrong class
        [100, 100, 106, 106, 0.6, 0],  # object 2, IoU 0.36: poor box
        [200, 200, 220, 220, 0.5, 1],  # nothing there: background
        [50, 50, 70, 70, 0.1, 1],    # object 1 and its class, but below the threshold
    ])
    judged = judge_detections(det, TARGET, score_threshold=0.3)
    assert judged.kinds == ["correct", "duplicate", "wrong class", "poor box", "background"]
    assert judged.missed == [1, 2]
    counts = judged.counts()
    assert [counts[k] for k in KINDS] == [1, 1, 1, 1, 1] and counts["missed"] == 2
    assert judge_detections(det, TARGET, score_threshold=0.05).missed == [2]


def test_highest_score_finds_the_object_whatever_the_input_order():
    det = detections([[0, 0, 10, 9, 0.4, 0], [0, 0, 10, 10, 0.9, 0]])
    judged = judge_detections(det, TARGET)
    assert judged.scores.tolist() == pytest.approx([0.9, 0.4])
    assert judged.kinds == ["correct", "duplicate"]


def test_no_objects_or_no_detections():
    empty_target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    det = detections([[0, 0, 10, 10, 0.9, 0]])
    assert judge_detections(det, empty_target).kinds == ["background"]
    none = judge_detections(detections([]), TARGET)
    assert none.kinds == [] and none.missed == [0, 1, 2]
    with pytest.raises(ValueError, match="iou_threshold"):
        judge_detections(det, TARGET, iou_threshold=0)


def test_drawing_puts_the_best_box_on_top_and_dashes_the_misses():
    det = detections([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 9, 0.8, 0]])
    judged = judge_detections(det, TARGET)
    ax = draw_judged(torch.zeros(3, 120, 120), judged, TARGET, ["a", "b"])
    texts = [(t.get_text(), t.get_va()) for t in ax.texts]
    # drawn last = on top; the duplicate overlaps the better box, so its label goes below its box
    assert texts == [("a 0.80 (duplicate)", "top"), ("a 0.90", "bottom")]
    assert ax.texts[0].get_position()[1] == 9.0  # the duplicate's bottom edge
    dashed = [p for p in ax.patches if p.get_linestyle() == "--"]
    assert len(dashed) == 2  # objects 1 and 2 missed
