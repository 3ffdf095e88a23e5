"""A small, readable training loop for image classification (Part II's proxy experiments).

Kept apart from the models (a model knows no training loop): AdamW, a linear warm-up then a
cosine decay (both from :mod:`~effnet_tutorial.schedules`, shared with the detector's trainer),
one text line per epoch. Images arrive as ``uint8 (N, 3, S, S)`` and are resized
once per run to the resolution under study, which is how resolution scaling enters.

In the book: Chapter 5, *Scaling one dimension at a time, and all three together*.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .schedules import warmup_cosine_lr, weight_decay_groups
from .utils import try_gpu


@dataclass
class ClassifierConfig:
    """Hyper-parameters of :func:`train_classifier`; every candidate of a search shares one."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0
    #: CPU threads while training (``None`` keeps torch's setting). On a small, shared CPU one
    #: thread can be many times faster than two that wait for each other (Part II measures it).
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and 0 <= warmup_fraction < 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be None or >= 1, got {self.num_threads}")


def prepare_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """``uint8 (N, 3, S, S)`` -> float ``(N, 3, resolution, resolution)``, zero mean, unit-ish std.

    Downsampling uses an anti-aliased bilinear filter, so detail finer than the new pixel
    size is averaged away, as a camera with fewer pixels would.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    x = images.float().div_(255.0)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                          align_corners=False)
    return (x - 0.5) / 0.25


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, resolution: int,
             batch_size: int = 512, device: torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` resized to ``resolution``."""
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError("need as many labels as images (and at least one): "
                         f"{len(images)} vs {len(labels)}")
    device = device or try_gpu()
    model.eval().to(device)
    x = prepare_images(images, resolution)
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(x)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    resolution: int,
    config: ClassifierConfig = ClassifierConfig(),
    device: torch.device | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Train ``model`` in place on ``(images, labels)`` at ``resolution``; returns per-epoch logs.

    Deterministic for ``config.seed`` on the CPU (shuffling and dropout draw from it).
    """
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError("need as many labels as images (and at least one): "
                         f"{len(images)} vs {len(labels)}")
    if labels.dtype != torch.int64 or labels.ndim != 1:
        raise ValueError(f"labels must be int64 (N,), got {labels.dtype} {tuple(labels.shape)}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(model, images, labels, resolution, config, device or try_gpu(), log)
    finally:
        torch.set_num_threads(threads)


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, resolution: int,
           config: ClassifierConfig, device: torch.device,
           log: Callable[[str], None] | None) -> list[dict]:
    torch.manual_seed(config.seed)
    x_all = prepare_images(images, resolution)
    model.to(device).train()
    opt = torch.optim.AdamW(weight_decay_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = math.ceil(len(x_all) / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = max(1, int(config.warmup_fraction * total))
    warmup_init = config.lr / warmup  # the first step is not wasted at a learning rate of zero
    gen = torch.Generator().manual_seed(config.seed)
    history, step = [], 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        start, loss_sum = time.perf_counter(), 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            lr = warmup_cosine_lr(step, total, warmup, config.lr, warmup_init)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(x_all[idx].to(device))
            loss = F.cross_entropy(logits, labels[idx].to(device),
                                   label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at step {step}: lower config.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step += 1
        seconds = time.perf_counter() - start
        row = {"epoch": epoch + 1, "loss": loss_sum / len(x_all), "lr": lr,
               "images_per_s": len(x_all) / seconds}
        history.append(row)
        if log is not None:
            log(f"epoch {epoch + 1}/{config.epochs}  loss {row['loss']:.4f}  lr {lr:.2e}  "
                f"{row['images_per_s']:.0f} img/s")
    return history
