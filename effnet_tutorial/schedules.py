"""The optimiser settings that both training loops share: the learning-rate schedule and which
parameters get weight decay.

The classifier of Part II (:mod:`effnet_tutorial.classify`) and the detector's
:class:`~effnet_tutorial.train.Trainer` both warm the learning rate up linearly, then let it fall
along half a cosine, and both leave biases and normalisation parameters out of weight decay. Each
idea is written once, here.

In the book: Chapter 5, *Scaling one dimension at a time, and all three together*.
"""
from __future__ import annotations

import math

from torch import nn


def cosine_decay(progress: float, base_lr: float, min_lr: float = 0.0) -> float:
    """Half a cosine from ``base_lr`` (``progress`` 0) down to ``min_lr`` (``progress`` 1).

    It stays near the peak for long, falls fastest midway and lands gently. ``progress`` may
    count steps or training time, which is how a time budget carries the schedule.
    """
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                     warmup_init: float = 0.0, min_lr: float = 0.0) -> float:
    """The learning rate of step ``step`` (counted from 0): a straight line from ``warmup_init``
    to ``base_lr`` over the first ``warmup_steps``, then :func:`cosine_decay` down to ``min_lr``
    at ``total_steps`` (and ``min_lr`` after it).

    The warm-up keeps the large, erratic gradients of freshly initialised weights (and of the
    optimiser's still empty statistics) from throwing the network far off at full speed.
    """
    if step < warmup_steps:
        return warmup_init + (base_lr - warmup_init) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return cosine_decay(progress, base_lr, min_lr)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups: ``weight_decay`` on the trainable parameters with two or more
    dimensions (convolution and linear weights), none on those with at most one (biases,
    batch-norm scales and shifts, the BiFPN's fusion weights).

    Decay keeps the many weights of a layer small; the few per-channel scales and offsets set
    where a layer works, and pulling them towards zero only hurts, so the reference
    implementations leave them out. Frozen parameters (``requires_grad`` off) are in no group.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
