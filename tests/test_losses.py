"""Focal, Huber and detection loss against effdet 0.4.1 ``loss.py`` on real anchor targets."""
import math
import warnings

import pytest
import torch

from effnet_tutorial import anchors as A
from effnet_tutorial import losses as L

with warnings.catch_warnings():  # effdet scripts parts of itself at import (FutureWarning)
    warnings.simplefilter("ignore")
    from effdet.loss import huber_loss as ref_huber
    from effdet.loss import loss_fn, new_focal_loss

SIZE, C, B = 128, 4, 3


def random_outputs(seed: int, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    sizes = A.feature_sizes(SIZE)
    cls = [torch.randn(batch, 9 * C, h, w, generator=g) * 2 for h, w in sizes]
    box = [torch.randn(batch, 36, h, w, generator=g) * 0.3 for h, w in sizes]
    return cls, box


def real_targets():
    """Targets for three images (one of them empty), in this package's per-level layout."""
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0], [50.0, 50.0, 54.0, 53.0]]),
             torch.zeros(0, 4),
             torch.tensor([[0.0, 0.0, 127.0, 127.0], [30.0, 40.0, 100.0, 70.0]])]
    labels = [torch.tensor([0, 3]), torch.zeros(0, dtype=torch.long), torch.tensor([2, 1])]
    t = A.assign_targets_batch(A.generate_anchors(SIZE), boxes, labels)
    cls_t, box_t = A.targets_by_level(t.cls_targets, t.box_targets, A.feature_sizes(SIZE))
    return cls_t, box_t, t.num_positives


def test_focal_loss_equals_effdet_elementwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g) * 3
    targets = (torch.rand(6, 7, generator=g) > 0.7).float()
    for smoothing in (0.0, 0.1):
        ref = new_focal_loss(logits, targets, 0.25, 1.5, normalizer=1.0, label_smoothing=smoothing)
        torch.testing.assert_close(L.focal_loss(logits, targets, label_smoothing=smoothing), ref)


def test_focal_loss_by_hand():
    # gamma 0: alpha-weighted cross-entropy; a positive at logit 0 costs 0.25 * log 2
    loss = L.focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), alpha=0.25, gamma=0.0)
    torch.testing.assert_close(loss, torch.tensor([0.25, 0.75]) * math.log(2))
    # an easy negative (p = sigmoid(-4)) is scaled down by p ** 1.5
    p = torch.sigmoid(torch.tensor(-4.0))
    easy = L.focal_loss(torch.tensor([-4.0]), torch.tensor([0.0]))
    torch.testing.assert_close(easy, 0.75 * p**1.5 * -torch.log(1 - p).reshape(1))


def test_huber_loss_by_hand_and_against_effdet():
    x = torch.tensor([0.05, -0.3, 0.0, 2.0])
    expected = torch.tensor([0.5 * 0.05**2, 0.1 * 0.3 - 0.005, 0.0, 0.1 * 2.0 - 0.005])
    torch.testing.assert_close(L.huber_loss(x, torch.zeros(4)), expected)
    y = torch.randn(50)
    torch.testing.assert_close(L.huber_loss(y, y.flip(0)).sum(),
                               ref_huber(y, y.flip(0), delta=0.1, size_average=False))


def _effdet_loss(cls, box, cls_t, box_t, npos, smoothing):
    return loss_fn(cls, box, cls_t, box_t, npos, num_classes=C, alpha=0.25, gamma=1.5, delta=0.1,
                   box_loss_weight=50.0, label_smoothing=smoothing)


@pytest.mark.usefixtures("fast_paths")
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_detection_loss_equals_effdet(smoothing):
    cls, box = random_outputs(1)
    cls_t, box_t, npos = real_targets()
    assert npos.tolist()[1] == 0 and npos.sum() > 4
    ref = _effdet_loss(cls, box, cls_t, box_t, npos, smoothing)
    mine = L.detection_loss(cls, box, cls_t, box_t, npos, C, label_smoothing=smoothing)
    for r, m in zip(ref, mine):  # total, cls, box
        torch.testing.assert_close(m, r, rtol=1e-5, atol=0)
    assert mine[2] > 0


@pytest.mark.usefixtures("fast_paths")
def test_ignored_anchors_are_masked_like_effdet():
    cls, box = random_outputs(2)
    cls_t, box_t, npos = real_targets()
    cls_t = [t.clone() for t in cls_t]
    cls_t[0][:, :5] = L.IGNORE  # rows of P3 cells ignored
    ref = _effdet_loss(cls, box, cls_t, box_t, npos, 0.0)
    mine = L.detection_loss(cls, box, cls_t, box_t, npos, C)
    for r, m in zip(ref, mine):
        torch.testing.assert_close(m, r, rtol=1e-5, atol=0)


@pytest.mark.usefixtures("fast_paths")
def test_loss_is_finite_and_differentiable_without_objects():
    cls, box = random_outputs(3, batch=2)
    for t in cls + box:
        t.requires_grad_(True)
    anchors = A.generate_anchors(SIZE)
    empty = A.assign_targets_batch(anchors, [torch.zeros(0, 4)] * 2,
                                   [torch.zeros(0, dtype=torch.long)] * 2)
    cls_t, box_t = A.targets_by_level(empty.cls_targets, empty.box_targets, A.feature_sizes(SIZE))
    total, cls_loss, box_loss = L.detection_loss(cls, box, cls_t, box_t, empty.num_positives, C)
    assert torch.isfinite(total) and box_loss == 0 and cls_loss > 0
    total.backward()
    assert all(torch.isfinite(t.grad).all() for t in cls)
    ref = _effdet_loss(cls, box, cls_t, box_t, empty.num_positives, 0.0)
    torch.testing.assert_close(total, ref[0], rtol=1e-5, atol=0)


def test_bad_shapes_are_rejected_with_a_reason():
    cls, box = random_outputs(4)
    cls_t, box_t, npos = real_targets()
    with pytest.raises(ValueError, match="level 0: cls_outputs"):
        L.detection_loss([cls[0][:, :-1]] + cls[1:], box, cls_t, box_t, npos, C)
    with pytest.raises(ValueError, match="level 2: box_targets"):
        L.detection_loss(cls, box, cls_t, box_t[:2] + [box_t[2][..., :8]] + box_t[3:], npos, C)
    with pytest.raises(ValueError, match="one tensor per level"):
        L.detection_loss(cls[:4], box, cls_t, box_t, npos, C)
    with pytest.raises(ValueError, match="num_classes"):
        L.detection_loss(cls, box, [t + 10 for t in cls_t], box_t, npos, C)
    with pytest.raises(ValueError, match="differ"):
        L.focal_loss(torch.zeros(3), torch.zeros(4))


@pytest.mark.usefixtures("fast_paths")
@pytest.mark.parametrize("smoothing,ignore", [(0.0, False), (0.1, False), (0.0, True)])
def test_detection_loss_gradients_equal_effdet(smoothing, ignore):
    # focal_loss_sum has a hand-written backward: its gradient must be effdet's autograd one
    cls_t, box_t, npos = real_targets()
    if ignore:
        cls_t = [t.clone() for t in cls_t]
        cls_t[1][0, :3] = L.IGNORE
    grads = []
    for fn in (lambda c, b: L.detection_loss(c, b, cls_t, box_t, npos, C, label_smoothing=smoothing)[0],
               lambda c, b: _effdet_loss(c, b, cls_t, box_t, npos, smoothing)[0]):
        cls, box = random_outputs(5)
        for t in cls + box:
            t.requires_grad_(True)
        fn(cls, box).backward()
        grads.append([t.grad for t in cls + box])
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-7)


def test_focal_loss_sum_equals_the_elementwise_sum():
    g = torch.Generator().manual_seed(6)
    a, k = 3, 5
    logits = torch.randn(2, 4, a * k, generator=g) * 4
    cls_t = torch.randint(-2, k, (2, 4, a), generator=g)
    onehot = L.one_hot_targets(cls_t, k).view(2, 4, a * k)
    valid = (cls_t != L.IGNORE).repeat_interleave(k, dim=-1)
    for smoothing in (0.0, 0.2):
        expected = (L.focal_loss(logits, onehot, label_smoothing=smoothing) * valid).sum()
        torch.testing.assert_close(L.focal_loss_sum(logits, cls_t, k, label_smoothing=smoothing), expected)
    with pytest.raises(ValueError, match="classes for each anchor"):
        L.focal_loss_sum(logits[..., :-1], cls_t, k)
