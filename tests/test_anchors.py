"""Anchors, IoU, box coding and target assignment against effdet 0.4.1 (the reference).

effdet works in yxyx boxes with 1-based labels; this package in xyxy with 0-based labels, so the
tests convert at the boundary.
"""
import math
import warnings

import pytest
import torch

from effnet_tutorial import anchors as A
from effnet_tutorial import fast

with warnings.catch_warnings():  # effdet scripts its matcher at import (FutureWarning)
    warnings.simplefilter("ignore")
    from effdet.anchors import AnchorLabeler, Anchors

ASPECTS = [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]


def yxyx(boxes: torch.Tensor) -> torch.Tensor:
    """xyxy <-> yxyx (the same swap both ways)."""
    return boxes[..., [1, 0, 3, 2]]


def effdet_anchors(size) -> "Anchors":
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return Anchors(3, 7, 3, ASPECTS, 4.0, hw)


def random_boxes(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (size - 20)
    wh = torch.rand(n, 2, generator=g) * size * 0.6 + 2
    return torch.cat([xy, xy + wh], dim=1)


def hard_boxes(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes plus a tiny one (only a forced match) and an exact duplicate (a tie)."""
    boxes = random_boxes(8, size, seed)
    boxes[0] = torch.tensor([100.0, 100.0, 103.0, 102.0])  # 3 x 2 px: IoU < 0.5 with every anchor
    boxes[2] = boxes[1]
    labels = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(seed))
    return boxes, labels


# --------------------------------------------------------------------------- anchor grid
def test_feature_sizes_use_ceil_halving():
    assert A.feature_sizes(512) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert A.feature_sizes(333) == [(42, 42), (21, 21), (11, 11), (6, 6), (3, 3)]
    assert A.feature_sizes((640, 384), 3, 4) == [(80, 48), (40, 24)]


def test_d0_has_49104_anchors():
    assert A.generate_anchors(512).shape == (49104, 4)
    assert 9 * sum(h * w for h, w in A.feature_sizes(512)) == 49104


@pytest.mark.parametrize("size", [512, (640, 384), 333, (300, 500)])
def test_anchors_equal_effdet_in_value_and_order(size):
    ref = yxyx(effdet_anchors(size).boxes)
    mine = A.generate_anchors(size)
    assert mine.dtype == torch.float32
    assert torch.equal(mine, ref)


def test_first_d0_anchors():
    first = A.generate_anchors(512)[:3]
    expected = torch.tensor([[-12.0, -12.0, 20.0, 20.0],   # 32 px square at (4, 4)
                             [-18.4, -7.2, 26.4, 15.2],    # 1.4 wide, 0.7 high
                             [-7.2, -18.4, 15.2, 26.4]])   # 0.7 wide, 1.4 high
    torch.testing.assert_close(first, expected)


# --------------------------------------------------------------------------- IoU and coding
@pytest.mark.usefixtures("fast_paths")
def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 5.0, 2.0],
                      [1.0, 1.0, 1.0, 1.0]])
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 0.0],          # corner overlap; same; touching
                             [0.0, 2 / 6, 2 / 8, 0.0]])       # touching; 2 of 4+4-2; 2 of 4+6-2
    torch.testing.assert_close(A.box_iou(a, b), expected)


@pytest.mark.usefixtures("fast_paths")
def test_box_iou_equals_torchvision():
    from torchvision.ops import box_iou as tv_box_iou

    a, b = random_boxes(30, 100, 0), random_boxes(20, 100, 1)
    torch.testing.assert_close(A.box_iou(a, b), tv_box_iou(a, b))


def textbook_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU written out plainly, the formula the fast version must reproduce bit for bit."""
    iw = (torch.min(a[:, None, 2], b[None, :, 2]) - torch.max(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    ih = (torch.min(a[:, None, 3], b[None, :, 3]) - torch.max(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = ih * iw
    union = ((a[:, 3] - a[:, 1]) * (a[:, 2] - a[:, 0]))[:, None] + ((b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0]))[None, :] - inter
    return torch.where(inter == 0, torch.zeros_like(inter), inter / union)


@pytest.mark.parametrize("degenerate", [False, True])
def test_fast_box_iou_is_bit_equal_to_the_textbook_formula(degenerate):
    a, b = random_boxes(7, 512, 3), A.generate_anchors(256)
    if degenerate:  # zero-area boxes on both sides, one of them on top of the other
        a[2, 2:] = a[2, :2]
        b = b.clone()
        b[5] = torch.tensor([a[2, 0], a[2, 1], a[2, 0], a[2, 1]])
    with fast.using(True):
        got = A.box_iou(a, b)
    with fast.using(False):
        textbook = A.box_iou(a, b)
    assert torch.equal(got, textbook) and torch.equal(textbook, textbook_iou(a, b))
    assert not torch.isnan(got).any()
    if degenerate:
        assert got[2].eq(0).all()


def test_encode_decode_round_trip_and_known_codes():
    anchors = A.generate_anchors(128)[::37]
    boxes = random_boxes(len(anchors), 128, 2)
    codes = A.encode_boxes(boxes, anchors)
    torch.testing.assert_close(A.decode_boxes(codes, anchors), boxes, atol=1e-3, rtol=1e-5)
    anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, center (20, 40)
    shifted = torch.tensor([[20.0, 20.0, 60.0, 60.0]])  # center x + 20 (= 1 w_a), w doubled
    torch.testing.assert_close(A.encode_boxes(shifted, anchor),
                               torch.tensor([[0.0, 1.0, 0.0, math.log(2.0)]]))  # [ty, tx, th, tw]


def test_encode_equals_effdet_box_coder():
    from effdet.object_detection import BoxList, FasterRcnnBoxCoder

    anchors = A.generate_anchors(128)[::11]
    boxes = random_boxes(len(anchors), 128, 3)
    ref = FasterRcnnBoxCoder().encode(BoxList(yxyx(boxes)), BoxList(yxyx(anchors)))
    assert torch.equal(A.encode_boxes(boxes, anchors), ref)


# --------------------------------------------------------------------------- matching
@pytest.mark.usefixtures("fast_paths")
def test_tiny_box_is_force_matched_to_its_best_anchor():
    anchors = A.generate_anchors(256)
    tiny = torch.tensor([[100.0, 100.0, 103.0, 102.0]])
    iou = A.box_iou(anchors, tiny)[:, 0]
    assert iou.max() < 0.5
    matches = A.match_anchors(anchors, tiny)
    assert matches.tolist().count(0) == 1 and matches[iou.argmax()] == 0


@pytest.mark.usefixtures("fast_paths")
def test_duplicate_boxes_go_to_the_lower_index():
    anchors = A.generate_anchors(256)
    box = torch.tensor([[40.0, 40.0, 104.0, 104.0]])
    matches = A.match_anchors(anchors, torch.cat([box, box]))
    assert (matches == 0).sum() > 0 and (matches == 1).sum() == 0


def _effdet_flat(targets_per_level, width):
    return torch.cat([t.reshape(t.shape[0], -1, width) for t in targets_per_level], dim=1)


@pytest.mark.usefixtures("fast_paths")
@pytest.mark.parametrize("size,seed", [(256, 0), (256, 1), ((320, 192), 2), (512, 3)])
def test_targets_equal_effdet_label_anchors(size, seed):
    ref_anchors = effdet_anchors(size)
    labeler = AnchorLabeler(ref_anchors, num_classes=5, match_threshold=0.5)
    boxes, labels = hard_boxes(min(ref_anchors.image_size), seed)
    cls_ref, box_ref, npos_ref = labeler.label_anchors(yxyx(boxes), labels + 1)
    mine = A.assign_targets(A.generate_anchors(size), boxes, labels)
    assert torch.equal(mine.cls_targets, torch.cat([c.reshape(-1) for c in cls_ref]))
    assert torch.equal(mine.box_targets, torch.cat([b.reshape(-1, 4) for b in box_ref]))
    assert mine.num_positives == npos_ref and npos_ref >= 8 - 1  # duplicate shares anchors


@pytest.mark.usefixtures("fast_paths")
def test_batch_targets_equal_effdet_with_an_empty_image():
    size = 256
    labeler = AnchorLabeler(effdet_anchors(size), num_classes=5, match_threshold=0.5)
    boxes0, labels0 = hard_boxes(size, 4)
    boxes = [boxes0, torch.zeros(0, 4), random_boxes(3, size, 5)]
    labels = [labels0, torch.zeros(0, dtype=torch.long), torch.tensor([4, 0, 2])]
    # effdet input: padded yxyx, 1-based labels, -1 padding
    pad_boxes, pad_labels = torch.full((3, 8, 4), -1.0), torch.full((3, 8), -1.0)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        pad_boxes[i, : len(b)], pad_labels[i, : len(lab)] = yxyx(b), lab.float() + 1
    cls_ref, box_ref, npos_ref = labeler.batch_label_anchors(pad_boxes, pad_labels)

    anchors = A.generate_anchors(size)
    mine = A.assign_targets_batch(anchors, boxes, labels)
    assert torch.equal(mine.cls_targets, _effdet_flat(cls_ref, 1)[..., 0])
    assert torch.equal(mine.box_targets, _effdet_flat(box_ref, 4))
    assert torch.equal(mine.num_positives, npos_ref) and mine.num_positives[1] == 0

    # the same batch as padded tensors in this package's convention (xyxy, 0-based, -1 padding)
    padded = A.assign_targets_batch(anchors, yxyx(pad_boxes), (pad_labels - 1).clamp(min=-1).long())
    assert all(torch.equal(x, y) for x, y in zip(mine, padded))

    cls_levels, box_levels = A.targets_by_level(mine.cls_targets, mine.box_targets,
                                                A.feature_sizes(size))
    assert all(torch.equal(x, y) for x, y in zip(cls_levels, cls_ref))
    assert all(torch.equal(x, y) for x, y in zip(box_levels, box_ref))
    assert cls_levels[0].shape == (3, 32, 32, 9) and box_levels[0].shape == (3, 32, 32, 36)


def test_image_without_objects_is_all_background():
    anchors = A.generate_anchors(128)
    t = A.assign_targets(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (t.cls_targets == -1).all() and (t.box_targets == 0).all() and t.num_positives == 0
    padded = A.assign_targets(anchors, torch.ones(2, 4), torch.tensor([-1, -1]))
    assert (padded.cls_targets == -1).all() and padded.num_positives == 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("boxes,message", [
    (torch.tensor([[10.0, 50.0, 5.0, 60.0]]), "x2 >= x1"),          # x2 < x1
    (torch.tensor([[0.0, 0.0, 5.0, float("nan")]]), "NaN"),
    (torch.zeros(3, 5), r"shape \(N, 4\)"),
    (torch.zeros(4, dtype=torch.long).reshape(1, 4), "float"),
])
def test_bad_boxes_are_rejected_with_a_reason(boxes, message):
    anchors = A.generate_anchors(64)
    with pytest.raises(ValueError, match=message):
        A.box_iou(anchors, boxes)
    with pytest.raises(ValueError, match=message):
        A.assign_targets(anchors, boxes, torch.zeros(len(boxes), dtype=torch.long))


def test_bad_labels_sizes_and_targets_are_rejected():
    anchors = A.generate_anchors(64)
    boxes = random_boxes(2, 64, 0)
    with pytest.raises(ValueError, match="2 boxes but 3 labels"):
        A.assign_targets(anchors, boxes, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="0-based"):
        A.assign_targets(anchors, boxes, torch.tensor([0, -3]))
    with pytest.raises(ValueError, match="image_size"):
        A.generate_anchors((0, 64))
    with pytest.raises(ValueError, match="do not fit"):
        A.targets_by_level(torch.zeros(1, 100), torch.zeros(1, 100, 4), A.feature_sizes(64))
    with pytest.raises(ValueError, match="row by row"):
        A.encode_boxes(boxes, anchors[:3])
