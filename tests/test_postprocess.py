"""Top-k, NMS, soft-NMS and detections against effdet 0.4.1 and torchvision."""
import warnings

import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms

from effnet_tutorial import anchors as A
from effnet_tutorial import fast
from effnet_tutorial import postprocess as P

with warnings.catch_warnings():  # effdet scripts parts of itself at import (FutureWarning)
    warnings.simplefilter("ignore")
    from effdet.anchors import Anchors
    from effdet.bench import _batch_detection, _post_process
    from effdet.soft_nms import batched_soft_nms as ref_soft_nms

SIZE, C, B = 256, 5, 2


def textbook_top_k(cls, num_classes, k):
    """``(logits, flat index)`` of the textbook ``select_top_k`` (fast kernels off)."""
    box = [torch.zeros(c.shape[0], c.shape[1] // num_classes * 4, *c.shape[2:]) for c in cls]
    with fast.using(False):
        logits, _, anchor_idx, classes = P.select_top_k(cls, box, num_classes, k)
    return logits, anchor_idx * num_classes + classes


def random_outputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    sizes = A.feature_sizes(SIZE)
    cls = [torch.randn(B, 9 * C, h, w, generator=g) * 2 for h, w in sizes]
    box = [torch.randn(B, 36, h, w, generator=g) * 0.3 for h, w in sizes]
    return cls, box


def random_scored_boxes(n: int, seed: int, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 1], dim=1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


def effdet_detections(cls, box, soft_nms=False, img_scale=None, img_size=None, points=5000):
    anchors = Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, (SIZE, SIZE)).boxes
    c, b, idx, classes = _post_process(cls, box, num_levels=5, num_classes=C,
                                       max_detection_points=points)
    return _batch_detection(B, c, b, anchors, idx, classes, img_scale, img_size, 100, soft_nms)


# --------------------------------------------------------------------------- NMS
# above 1,000 boxes torchvision switches from the coordinate trick to a per-class loop
@pytest.mark.parametrize("n,seed", [(60, 0), (400, 1), (1200, 2)])
def test_batched_nms_equals_torchvision(n, seed):
    boxes, scores, labels = random_scored_boxes(n, seed)
    for threshold in (0.5, 0.3):
        expected = tv_batched_nms(boxes, scores, labels, threshold)
        assert torch.equal(P.nms_reference(boxes, scores, labels, threshold), expected)
        for backend in ("python", "auto", "torchvision"):
            assert torch.equal(P.batched_nms(boxes, scores, labels, threshold, backend=backend), expected)


@pytest.mark.parametrize("backend", ["python", "torchvision"])
def test_max_output_is_a_prefix(backend):
    boxes, scores, labels = random_scored_boxes(500, 3)
    full = P.batched_nms(boxes, scores, labels, backend=backend)
    assert len(full) > 20
    assert torch.equal(P.batched_nms(boxes, scores, labels, max_output=20, backend=backend), full[:20])
    soft_idx, soft_scores = P.batched_soft_nms(boxes, scores, labels)
    idx20, scores20 = P.batched_soft_nms(boxes, scores, labels, max_output=20)
    assert torch.equal(idx20, soft_idx[:20]) and torch.equal(scores20, soft_scores[:20])


@pytest.mark.usefixtures("fast_paths")
def test_soft_nms_equals_effdet():
    boxes, scores, labels = random_scored_boxes(300, 4)
    ref_idx, ref_scores = ref_soft_nms(boxes, scores, labels, method_gaussian=True,
                                       iou_threshold=0.3, score_threshold=0.001)
    idx, new_scores = P.batched_soft_nms(boxes, scores, labels, sigma=0.5, score_threshold=0.001)
    assert torch.equal(idx, ref_idx)  # effdet offsets boxes per class, so scores differ in ulps
    torch.testing.assert_close(new_scores, ref_scores, rtol=1e-5, atol=1e-7)
    assert (new_scores[1:] <= new_scores[:-1]).all()


# --------------------------------------------------------------------------- detections
@pytest.mark.usefixtures("fast_paths")
def test_top_k_flattens_like_effdet():
    cls, box = random_outputs(5)
    ref = _post_process(cls, box, num_levels=5, num_classes=C, max_detection_points=1000)
    logits, codes, anchor_idx, classes = P.select_top_k(cls, box, C, k=1000)
    assert torch.equal(logits, ref[0][..., 0]) and torch.equal(codes, ref[1])
    assert torch.equal(anchor_idx, ref[2]) and torch.equal(classes, ref[3])


def num_anchors():
    return 9 * sum(h * w for h, w in A.feature_sizes(SIZE))


def distinct_outputs(seed: int):
    """Class outputs whose logits are all different (a random permutation of distinct values)."""
    g = torch.Generator().manual_seed(seed)
    sizes = A.feature_sizes(SIZE)
    n = sum(B * 9 * C * h * w for h, w in sizes)
    flat = torch.randperm(n, generator=g).float() / n * 8 - 4
    return [c.reshape(B, 9 * C, h, w) for c, (h, w) in
            zip(flat.split([B * 9 * C * h * w for h, w in sizes]), sizes)]


@pytest.mark.parametrize("k", [1, 100, 5000, "anchors"])
def test_two_stage_top_k_selects_what_the_flat_top_k_selects(k):
    k = num_anchors() if k == "anchors" else k
    for seed in (0, 1):
        cls = distinct_outputs(seed)
        flat = textbook_top_k(cls, C, k)
        two = fast.kernels.top_k_two_stage(cls, C, k)
        assert two is not None
        assert torch.equal(two[0], flat[0]) and torch.equal(two[1], flat[1])
        # also from channels_last outputs (a reshape, not a view)
        cl = [c.to(memory_format=torch.channels_last) for c in cls]
        assert torch.equal(fast.kernels.top_k_two_stage(cl, C, k)[1], flat[1])


def test_tied_logits_take_the_single_top_k():
    # Equal logits are where two topk calls may keep different pairs; the two-stage path
    # declines them, so the selection is always the single topk's (effdet's).
    g = torch.Generator().manual_seed(3)
    cls = [torch.randint(0, 4, (B, 9 * C, h, w), generator=g).float() for h, w in A.feature_sizes(SIZE)]
    assert fast.kernels.top_k_two_stage(cls, C, 3000) is None
    box = [torch.zeros(B, 36, h, w) for h, w in A.feature_sizes(SIZE)]
    logits, _, anchor_idx, classes = P.select_top_k(cls, box, C, k=3000)
    flat = textbook_top_k(cls, C, 3000)
    assert torch.equal(logits, flat[0]) and torch.equal(anchor_idx * C + classes, flat[1])
    # a single tie between a selected logit and the best one left out is declined too
    cls = distinct_outputs(4)
    flat_values = torch.cat([c.permute(0, 2, 3, 1).reshape(B, -1) for c in cls], 1)
    kth, next_one = flat_values[0].topk(101).values[-2:]
    for c in cls:
        c[c == next_one] = kth
    assert fast.kernels.top_k_two_stage(cls, C, 100) is None


def test_select_top_k_beyond_the_anchor_count_uses_the_flat_top_k():
    cls, box = random_outputs(4)
    k = num_anchors() + 7  # more pairs than anchors: stage 1 cannot bound the k-th logit
    logits, _, anchor_idx, classes = P.select_top_k(cls, box, C, k=k)
    flat = textbook_top_k(cls, C, k)
    assert torch.equal(logits, flat[0]) and torch.equal(anchor_idx * C + classes, flat[1])


@pytest.mark.usefixtures("fast_paths")
@pytest.mark.parametrize("letterbox", [False, True])
def test_detections_equal_effdet_with_hard_nms(letterbox):
    cls, box = random_outputs(6)
    anchors = A.generate_anchors(SIZE)
    if letterbox:  # effdet: img_scale = original / input pixels, img_size = original (W, H)
        scale, size_wh = torch.tensor([1.5, 0.8]), torch.tensor([[300.0, 250.0], [200.0, 180.0]])
        ref = effdet_detections(cls, box, img_scale=scale, img_size=size_wh)
        dets = P.postprocess_detections(cls, box, anchors, C, image_scales=scale,
                             image_sizes=size_wh[:, [1, 0]])  # ours: (H, W)
    else:
        ref = effdet_detections(cls, box)
        dets = P.postprocess_detections(cls, box, anchors, C)
    assert torch.equal(P.to_effdet_layout(dets), ref)
    for det in dets:
        assert set(det) == {"boxes", "scores", "labels"} and len(det["boxes"]) == 100
        assert det["labels"].min() >= 0 and det["labels"].max() < C
        assert (det["scores"][1:] <= det["scores"][:-1]).all()
        assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all()


@pytest.mark.usefixtures("fast_paths")
def test_detections_equal_effdet_with_soft_nms():
    cls, box = random_outputs(7)
    scale, size_wh = torch.tensor([1.0, 2.0]), torch.tensor([[256.0, 256.0], [400.0, 512.0]])
    # effdet's soft-NMS visits every box (slow), so compare on the top 300 points
    ref = effdet_detections(cls, box, soft_nms=True, img_scale=scale, img_size=size_wh, points=300)
    dets = P.postprocess_detections(cls, box, A.generate_anchors(SIZE), C, max_detection_points=300,
                         soft_nms=True, image_scales=scale, image_sizes=size_wh[:, [1, 0]])
    mine = P.to_effdet_layout(dets)
    assert torch.equal(mine[..., [0, 1, 2, 3, 5]], ref[..., [0, 1, 2, 3, 5]])
    torch.testing.assert_close(mine[..., 4], ref[..., 4], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_are_rejected_with_a_reason():
    cls, box = random_outputs(8)
    anchors = A.generate_anchors(SIZE)
    bad = [c.clone() for c in cls]
    bad[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        P.postprocess_detections(bad, box, anchors, C)
    with pytest.raises(ValueError, match="level 0"):
        P.postprocess_detections(cls, box, anchors, C + 1)
    boxes, scores, labels = random_scored_boxes(10, 0)
    with pytest.raises(ValueError, match="scores and labels"):
        P.batched_nms(boxes, scores[:5], labels)
    with pytest.raises(ValueError, match="backend"):
        P.batched_nms(boxes, scores, labels, backend="cuda")
    with pytest.raises(ValueError, match="x2 >= x1"):
        P.batched_nms(boxes[:, [2, 1, 0, 3]], scores, labels)


def test_ties_inside_the_selection_come_in_flat_order():
    cls = distinct_outputs(5)
    flat = torch.cat([c.permute(0, 2, 3, 1).reshape(B, -1) for c in cls], 1)
    third, fifth = flat[0].topk(5).values[[2, 4]]
    for c in cls:
        c[c == fifth] = third  # places 3 and 4 (0-based 2 and 3) now hold equal logits
    values, index = fast.kernels.top_k_two_stage(cls, C, 50)
    assert values[0, 2] == values[0, 3] and index[0, 2] < index[0, 3]
    assert_same_set = set(index[0].tolist()) == set(textbook_top_k(cls, C, 50)[1][0].tolist())
    assert assert_same_set and torch.equal(values, textbook_top_k(cls, C, 50)[0])
