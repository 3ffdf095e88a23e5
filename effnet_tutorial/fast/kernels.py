"""The fast kernels behind :func:`effnet_tutorial.fast.enabled`, each the twin of a textbook function.

* :func:`pairwise_iou` for :func:`effnet_tutorial.anchors.pairwise_iou` (anchor matching);
* :func:`focal_loss_sum` for :func:`effnet_tutorial.losses.focal_loss_sum` (the class loss);
* :func:`top_k_two_stage` for :func:`effnet_tutorial.postprocess.select_top_k` on the CPU.

They import nothing from the concept modules, which call them; tests hold each equal to its
twin (values and gradients) and the benchmark measures what each buys.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- IoU
def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes ``(N, 4)`` x ``(M, 4)`` -> ``(N, M)``, bit for bit the textbook
    ``inter / (area_a + area_b - inter)`` of :func:`effnet_tutorial.anchors.pairwise_iou`.

    For a few boxes against ~50k anchors every pass over the ``(N, M)`` grid counts: ``b``'s
    coordinates become contiguous rows once, grid-sized temporaries are reused in place, and the
    ``0 / 0`` guard runs only when some box has zero area.
    """
    bx1, by1, bx2, by2 = b.t().contiguous()
    inter = torch.minimum(a[:, 2:3], bx2).sub_(torch.maximum(a[:, 0:1], bx1)).clamp_(min=0)
    inter_h = torch.minimum(a[:, 3:4], by2).sub_(torch.maximum(a[:, 1:2], by1)).clamp_(min=0)
    inter.mul_(inter_h)
    del inter_h
    area_a = (a[:, 3] - a[:, 1]) * (a[:, 2] - a[:, 0])
    area_b = (by2 - by1) * (bx2 - bx1)
    iou = (area_a[:, None] + area_b).sub_(inter)  # the union, then the quotient, in one buffer
    degenerate = not (bool((area_a > 0).all()) and bool((area_b > 0).all()))
    iou = torch.div(inter, iou, out=iou)
    # Boxes that do not touch have IoU 0, also when both are degenerate (0 / 0).
    return iou.masked_fill_(inter == 0, 0.0) if degenerate else iou


# --------------------------------------------------------------------------- focal loss
def _negative_bce(logits: torch.Tensor, y0: float) -> torch.Tensor:
    """``BCE(x, y0) = softplus(x) - y0 x``, the cross-entropy of a negative with smoothed label ``y0``."""
    bce = F.softplus(logits)
    return bce.sub_(logits * y0) if y0 else bce


class _NegativeFocalSum(torch.autograd.Function):
    """``sum(sigmoid(x) ** gamma * BCE(x, y0))``: every logit scored as a negative, in one pass.

    With a hard label 0, ``p_t = 1 - p`` and the focal factor ``(1 - p_t) ** gamma`` is
    ``p ** gamma``; ``y0`` is the smoothed negative label ``s / 2``, and
    ``BCE(x, y0) = softplus(x) - y0 x``. The gradient has a closed form,
    ``p ** gamma * (gamma (1 - p) BCE(x, y0) + p - y0)``, so backward recomputes it from ``x``
    alone: nothing of the size of the logits is saved between forward and backward, and the
    millions of logit-class pairs of a 512-pixel image pass through a handful of kernels instead
    of the dozen that autograd would record for the elementwise formula.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, gamma: float, y0: float) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(logits)
        ctx.gamma, ctx.y0 = gamma, y0
        return logits.sigmoid().pow_(gamma).mul_(_negative_bce(logits, y0)).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: D102
        (logits,) = ctx.saved_tensors
        gamma, y0 = ctx.gamma, ctx.y0
        p = logits.sigmoid()
        grad = (1.0 - p).mul_(_negative_bce(logits, y0)).mul_(gamma).add_(p)
        if y0:
            grad = grad.sub_(y0)
        grad = grad.mul_(p.pow_(gamma)).mul_(grad_output)
        return grad, None, None


def _focal_as(logits: torch.Tensor, positive: bool, alpha: float, gamma: float,
              y0: float) -> torch.Tensor:
    """Elementwise focal loss of ``logits`` that all carry the hard label 1 (or all 0)."""
    p = logits.sigmoid()
    if positive:
        factor, target = alpha * (1.0 - p) ** gamma, 1.0 - y0
    else:
        factor, target = (1.0 - alpha) * p**gamma, y0
    return factor * F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, target), reduction="none")


def focal_loss_sum(logits: torch.Tensor, cls_targets: torch.Tensor, num_classes: int,
                   alpha: float = 0.25, gamma: float = 1.5, label_smoothing: float = 0.0,
                   ignore_index: int = -2) -> torch.Tensor:
    """The textbook ``focal_loss_sum`` (shapes and checks there) without a one-hot tensor.

    All but a few hundred of the millions of logit-class pairs are negatives, so the sum is
    taken over *every* pair scored as a negative (``_NegativeFocalSum``, one autograd
    function), minus the ignored anchors' pairs, plus, at the positive pairs only, their loss as
    positives minus the negative loss the dense sum counted for them.
    """
    y0 = 0.5 * label_smoothing  # the smoothed label of a negative
    dense = (1.0 - alpha) * _NegativeFocalSum.apply(logits, gamma, y0)
    index = (cls_targets == ignore_index).nonzero(as_tuple=True)
    channels = index[-1][:, None] * num_classes + torch.arange(num_classes, device=logits.device)
    ignored = logits[tuple(i[:, None] for i in index[:-1]) + (channels,)]  # (K, C)
    dense = dense - (1.0 - alpha) * _NegativeFocalSum.apply(ignored, gamma, y0)
    index = (cls_targets >= 0).nonzero(as_tuple=True)
    x = logits[index[:-1] + (index[-1] * num_classes + cls_targets[index],)]  # own-class logits
    correction = _focal_as(x, True, alpha, gamma, y0) - _focal_as(x, False, alpha, gamma, y0)
    return dense + correction.sum()


# --------------------------------------------------------------------------- top-k
def top_k_two_stage(cls_outputs: Sequence[torch.Tensor], num_classes: int,
                     k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``k`` largest logits of ``topk`` over every (anchor, class) pair, found in two stages.

    Stage 1 takes each anchor's best class and the ``k``-th largest of those maxima, ``t``: at
    least ``k`` logits are ``>= t``, so all ``k`` largest are. Stage 2 runs ``topk`` over the
    few logits ``>= t`` only, read from the NCHW outputs with their flat ``anchor * C + class``
    indices. Needs ``k <= number of anchors``. Returns ``None`` when a tie at the ``k``-th place
    could make the selected set differ from the single ``topk``'s (a degenerate head); the
    caller then runs the single ``topk``. CPU only: on a GPU the data-dependent sizes would
    synchronise, and one ``topk`` is a fast kernel there.
    """
    batch = cls_outputs[0].shape[0]
    grids, best = [], []
    for c in cls_outputs:
        _, channels, h, w = c.shape
        grid = c.reshape(batch, channels // num_classes, num_classes, h, w)  # (B, A, C, H, W)
        grids.append(grid)
        best.append(grid.amax(dim=2).permute(0, 2, 3, 1).reshape(batch, -1))  # anchor order
    best = torch.cat(best, 1)
    best_k = best.topk(min(k + 1, best.shape[1]), dim=1).values
    if torch.isnan(best_k).any():
        raise ValueError("head outputs contain NaN")
    if best_k.shape[1] > k and (best_k[:, k - 1] == best_k[:, k]).any():
        return None  # tied maxima at the k-th place: a degenerate head, take the single topk
    threshold = best_k[:, k - 1]  # (B,)
    values: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    index: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    offset = 0
    for grid in grids:
        _, anchors, classes, h, w = grid.shape
        img, a, cls, y, x = (grid >= threshold.view(batch, 1, 1, 1, 1)).nonzero(as_tuple=True)
        flat = offset + ((y * w + x) * anchors + a) * classes + cls
        picked = grid[img, a, cls, y, x]
        counts = torch.bincount(img, minlength=batch).tolist()
        for i, (v, n) in enumerate(zip(picked.split(counts), flat.split(counts))):
            values[i].append(v)
            index[i].append(n)
        offset += h * w * anchors * classes
    tops = []
    for v, n in zip(values, index):
        n = torch.cat(n)
        order = n.argsort()  # candidates in flat order: equal logits stay in that order
        v, n = torch.cat(v)[order], n[order]
        ranked = torch.sort(v, descending=True, stable=True).indices  # a few thousand values
        if len(v) > k and v[ranked[k - 1]] == v[ranked[k]]:
            return None  # the k-th ties with the best one left out: the single topk's call
        keep = ranked[:k]
        tops.append((v[keep], n[keep]))
    return torch.stack([t[0] for t in tops]), torch.stack([t[1] for t in tops])
