"""Training EfficientDet: the paper's D0 recipe, checkpoints that survive anything, resumable runs.

Defaults follow Tan et al. (2020, Sec. 5.1) and the reference code: SGD with momentum 0.9, a linear
warm-up then a cosine decay (learning rate 0.08 per 64 images), weight decay 4e-5 on weights only
(not on BN or biases), gradient clipping at global norm 10, and an exponential moving average of
the weights with decay 0.9998. Every value is a field of :class:`TrainConfig`; the schedule and
the weight-decay groups come from :mod:`~effnet_tutorial.schedules`.

The device is chosen automatically; on CUDA the step runs in mixed precision with
``channels_last``. Checkpoints hold the model, the EMA, the optimiser, the step, the gradient
scaler and every RNG state, and are written atomically (temporary file, then rename), so a run
killed at any moment resumes exactly where it was: the data order and augmentations are functions
of (seed, epoch, index), not of how many batches were drawn before. A NaN or infinite loss stops
training with a clear message and leaves the last good checkpoint in place. Several GPUs (or CPU
processes) train with PyTorch's DistributedDataParallel when started with ``torchrun``.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .anchors import anchors_for, assign_targets_batch, feature_sizes, targets_by_level
from .data.transforms import collate
from .losses import detection_loss
from .schedules import cosine_decay, warmup_cosine_lr, weight_decay_groups
from .utils import try_gpu


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the paper's D0 recipe."""

    epochs: float = 300.0
    batch_size: int = 16
    optimizer: str = "sgd"  # "sgd" (the paper's) or "adamw" (faster from scratch on small budgets)
    #: None: 0.08 * batch_size / 64 for SGD (the reference's rule), 1e-3 for AdamW.
    lr: float | None = None
    warmup_epochs: float = 1.0
    warmup_lr_init: float | None = None  # None: lr / 10 (the reference's 0.008 for 0.08)
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 4e-5
    clip_grad_norm: float = 10.0
    ema_decay: float = 0.9998  # 0 disables the EMA
    #: Start the EMA with a smaller decay, min(decay, (1 + step) / (10 + step)), as the official
    #: TensorFlow implementation does; without it, a short run's average is mostly its random start.
    ema_warmup: bool = True
    amp: bool = True  # mixed precision, used only on CUDA
    channels_last: bool = True  # used only on CUDA
    sync_bn: bool = False  # SyncBatchNorm across processes (distributed runs)
    seed: int = 0
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    progress: bool = True
    #: Train for this many minutes of training time (evaluation excluded) instead of ``epochs``;
    #: the cosine schedule then runs over the time budget, so a run on a slow machine still
    #: completes its schedule.
    time_budget_minutes: float | None = None
    #: How training time is measured. ``"wall"`` (wall clock) is what a reader waits for;
    #: ``"process"`` counts the CPU time of this process, which on a shared CPU with one thread per
    #: run is the time the run would take alone (benchmarks use it; on a GPU it undercounts).
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.batch_size < 1 or not self.epochs > 0:
            raise ValueError(
                f"need batch_size >= 1 and epochs > 0, got {self.batch_size}, {self.epochs}")
        if self.clock not in ("wall", "process"):
            raise ValueError(f"clock must be 'wall' or 'process', got {self.clock!r}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ValueError(
                f"time_budget_minutes must be > 0 or None, got {self.time_budget_minutes}")

    def base_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: ``lr``, or by default 0.08 per 64 images of the **global**
        batch (``batch_size`` per process times ``world_size`` processes) for SGD, the reference's
        linear scaling rule, and 1e-3 for AdamW."""
        if self.lr is not None:
            return self.lr
        return 0.08 * self.batch_size * world_size / 64 if self.optimizer == "sgd" else 1e-3


class ModelEma:
    """An exponential moving average of a model's weights (and a copy of its buffers).

    ``ema = d * ema + (1 - d) * weights`` after every optimiser step, with ``d = decay`` or, with
    ``warmup``, ``d = min(decay, (1 + step) / (10 + step))`` (TensorFlow's
    ``ExponentialMovingAverage(num_updates=step)``, which the official EfficientDet uses): with
    decay 0.9998 and no warm-up, the average after 1,000 steps still holds 82% of the random
    initial weights. Evaluation usually uses the EMA.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimiser step ``step`` (counted from 0)."""
        return min(self.decay, (1.0 + step) / (10.0 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        """Move the average towards ``model``'s current weights (``step``: for the warm-up)."""
        d = self.decay_at(step)
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.is_floating_point():
                ema_v.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                ema_v.copy_(v)


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SeededAugmentation(torch.utils.data.Dataset):
    """Wrap a dataset so that the random transform of item ``i`` in epoch ``e`` depends only on
    ``(seed, e, i)``: resumed runs see the same augmentations as uninterrupted ones.

    ``transform`` must have an ``rng`` attribute (a ``random.Random``), as
    :func:`~effnet_tutorial.data.transforms.train_transforms` returns.
    """

    def __init__(self, dataset, transform, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        self.transform.rng.seed(((self.seed * 1_000_003) + self.epoch) * 10_000_019 + index)
        return self.transform(image, target)


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def setup_distributed() -> tuple[int, int, torch.device]:
    """Join the process group when started by ``torchrun``; returns ``(rank, world_size, device)``.

    NCCL on CUDA, gloo on the CPU.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, try_gpu()
    if not _is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


@dataclass
class FitState:
    """What one call of :meth:`Trainer.fit` keeps track of, besides the trainer's own state."""

    stop: int  # the step this call stops at (sys.maxsize: only the time budget stops it)
    clock: Callable[[], float]  # reads the clock of training time (``TrainConfig.clock``)
    last: float  # its reading when training time last started counting
    start_seconds: float  # ``train_seconds`` when this call began, for ``images_per_s``
    on_epoch_end: Callable[[Trainer, int], None] | None = None
    on_eval: Callable[[Trainer], dict] | None = None
    eval_every_minutes: float | None = None
    next_eval: float | None = None  # the ``train_seconds`` at which ``on_eval`` is due next
    bar: Any = None  # the progress bar, if any
    seen: int = 0  # images trained on in this call, all processes together


class Trainer:
    """Train an :class:`~effnet_tutorial.efficientdet.EfficientDet` on a detection dataset.

    ``train_set[i]`` must give ``(image, target)`` with a normalised float ``(3, S, S)`` image
    and ``target["boxes"]`` (**xyxy** pixels of that image) and ``target["labels"]`` (0-based).
    Wrap a raw dataset with :class:`SeededAugmentation` for resumable augmentation. Outputs go
    to ``output_dir``: ``last.pth`` (checkpoint), ``metrics.jsonl`` (one JSON object per logged
    step or evaluation).
    """

    def __init__(self, model: nn.Module, train_set: torch.utils.data.Dataset, config: TrainConfig,
                 output_dir: str | os.PathLike, collate_fn: Callable = collate) -> None:
        if len(train_set) == 0:
            raise ValueError("the training set is empty")
        self.config, self.train_set, self.collate_fn = config, train_set, collate_fn
        self.output_dir = Path(output_dir)
        self.rank, self.world, self.device = setup_distributed()
        torch.manual_seed(config.seed)
        on_cuda = self.device.type == "cuda"
        self.use_amp = config.amp and on_cuda
        self.memory_format = (torch.channels_last if config.channels_last and on_cuda
                              else torch.contiguous_format)
        if config.sync_bn and self.world > 1:
            if on_cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                import warnings
                warnings.warn("sync_bn needs CUDA (SyncBatchNorm runs on GPUs only); training "
                              "these CPU processes with per-process batch norm", stacklevel=2)
        self.model = model.to(self.device, memory_format=self.memory_format)
        # What the training step calls: with several processes, the DistributedDataParallel
        # wrapper (which averages the gradients across processes); with one, the model itself.
        self.step_model = (nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if on_cuda else None)
            if self.world > 1 else self.model)
        groups = weight_decay_groups(self.model, config.weight_decay)
        peak = config.base_lr(self.world)
        if config.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=peak)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=peak, momentum=config.momentum)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = (ModelEma(self.model, config.ema_decay, config.ema_warmup)
                    if config.ema_decay > 0 else None)
        per_step = config.batch_size * self.world
        self.steps_per_epoch = max(1, len(train_set) // per_step)
        self.total_steps = max(1, int(round(config.epochs * self.steps_per_epoch)))
        self.warmup_steps = int(round(config.warmup_epochs * self.steps_per_epoch))
        self.step = 0
        self.train_seconds = 0.0  # training time so far (evaluation excluded), kept in checkpoints
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.fit_state: FitState | None = None  # set by fit

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly."""
        return {"model": self.model.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "train_seconds": self.train_seconds, "rng": _rng_state(),
                "config": asdict(self.config),
                "num_classes": getattr(self.model, "num_classes", None)}

    def save_checkpoint(self, name: str = "last.pth") -> Path | None:
        """Write a checkpoint atomically (rank 0 only); returns its path."""
        if self.rank != 0:
            return None
        path = self.output_dir / name
        atomic_save(self.state_dict(), path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a run from :meth:`save_checkpoint`'s file to continue it."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        _set_rng_state(state["rng"])

    # ----------------------------------------------------------------------------- steps
    def compute_loss(self, images: torch.Tensor,
                     targets: Sequence[dict]) -> tuple[torch.Tensor, ...]:
        """Forward pass, anchor targets and the detection loss ``(total, class, box)``."""
        size = tuple(images.shape[-2:])
        anchors = anchors_for(self.model, size).to(self.device)
        boxes = [t["boxes"].to(self.device) for t in targets]
        labels = [t["labels"].to(self.device) for t in targets]
        cls_t, box_t, num_pos = assign_targets_batch(anchors, boxes, labels)
        c = self.model.config
        cls_levels, box_levels = targets_by_level(
            cls_t, box_t, feature_sizes(size, c.min_level, c.max_level))
        with torch.autocast(self.device.type, enabled=self.use_amp):
            cls_out, box_out = self.step_model(images)
        # Each process normalises by its own positives (+1), as the reference does; DDP then
        # averages the gradients of the processes.
        total, cls_loss, box_loss = detection_loss(
            cls_out, box_out, cls_levels, box_levels, num_pos, self.model.num_classes)
        return total, cls_loss, box_loss

    def current_lr(self) -> float:
        """The learning rate of the next step: linear warm-up over ``warmup_epochs``, then a
        cosine decay over the steps of ``epochs`` or, with ``time_budget_minutes``, over the
        training time."""
        c = self.config
        peak = c.base_lr(self.world)
        init = c.warmup_lr_init if c.warmup_lr_init is not None else peak / 10
        if c.time_budget_minutes is None or self.step < self.warmup_steps:
            return warmup_cosine_lr(self.step, self.total_steps, self.warmup_steps, peak, init,
                                    c.min_lr)
        progress = min(1.0, self.train_seconds / (60.0 * c.time_budget_minutes))
        return cosine_decay(progress, peak, c.min_lr)

    def train_step(self, images: torch.Tensor, targets: Sequence[dict]) -> dict:
        """One optimiser step on a batch from :meth:`prepare_batch`; raises ``FloatingPointError``
        on a NaN or infinite loss."""
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total, cls_loss, box_loss = self.compute_loss(images, targets)
        self._check_finite(total, cls_loss, box_loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return {"loss": total.item(), "cls_loss": cls_loss.item(),
                "box_loss": box_loss.item(), "lr": lr, "grad_norm": float(grad_norm)}

    def _check_finite(self, total: torch.Tensor, cls_loss: torch.Tensor,
                      box_loss: torch.Tensor) -> None:
        """The NaN guard: stop before a NaN or infinite loss reaches the weights, and say where
        the last good checkpoint is."""
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"the loss became {total.item()} at step {self.step} (class {cls_loss.item()}, box "
                f"{box_loss.item()}); training stopped. The last good checkpoint is "
                f"{self.output_dir / 'last.pth'}. Lower the learning rate or check the data.")

    # ----------------------------------------------------------------------------- data
    def _epoch_batches(self, epoch: int, skip: int) -> Iterator:
        """Batches of ``epoch`` in a seeded order (this process's share), skipping ``skip``."""
        g = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        per_step = self.config.batch_size * self.world
        order = order[: self.steps_per_epoch * per_step][skip * per_step:]
        mine = [i for k, i in enumerate(order)
                if (k // self.config.batch_size) % self.world == self.rank]
        if hasattr(self.train_set, "epoch"):
            self.train_set.epoch = epoch
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=self.config.batch_size, sampler=mine,
            num_workers=self.config.num_workers, collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(epoch), drop_last=False,
            persistent_workers=False, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def prepare_batch(self, batch: tuple[torch.Tensor, list[dict]]
                      ) -> tuple[torch.Tensor, list[dict]]:
        """Move a batch's images to the device, in the model's memory format; the targets stay
        where they are (:meth:`compute_loss` moves what it needs)."""
        images, targets = batch
        return images.to(self.device, memory_format=self.memory_format, non_blocking=True), targets

    # ----------------------------------------------------------------------------- the loop
    def fit(self, max_steps: int | None = None,
            on_epoch_end: Callable[[Trainer, int], None] | None = None,
            eval_every_minutes: float | None = None,
            on_eval: Callable[[Trainer], dict] | None = None) -> None:
        """Train until ``total_steps`` or the time budget (or ``max_steps``, to stop early and
        resume later).

        With ``on_eval``, it is called every ``eval_every_minutes`` of training time and once at
        the end; what it returns is logged with ``"event": "eval"`` and the training time, and the
        time it takes is not counted as training time. That is how AP-against-time curves are made.
        """
        if (on_eval is None) != (eval_every_minutes is None):
            raise ValueError("give both eval_every_minutes and on_eval, or neither")
        self.fit_state = self._start_fit(max_steps, on_epoch_end, eval_every_minutes, on_eval)
        while not self._finished():
            self.fit_epoch()
        self._end_fit()

    def fit_epoch(self) -> None:
        """Train through the rest of the current epoch (all of it, unless resuming mid-epoch)."""
        epoch, skip = divmod(self.step, self.steps_per_epoch)
        for batch in self._epoch_batches(epoch, skip):
            images, targets = self.prepare_batch(batch)
            stats = self.train_step(images, targets)
            self._count_step(len(images))
            self._after_step(stats)
            if self._finished():
                break
        self._end_epoch()

    def _start_fit(self, max_steps: int | None, on_epoch_end: Callable[[Trainer, int], None] | None,
                   eval_every_minutes: float | None,
                   on_eval: Callable[[Trainer], dict] | None) -> FitState:
        """The bookkeeping of one call of :meth:`fit`: where it stops, when it evaluates next, its
        progress bar, and the clock of training time, started last."""
        budgeted = self.config.time_budget_minutes is not None
        stop = self.total_steps if not budgeted else sys.maxsize
        stop = min(stop, max_steps) if max_steps is not None else stop
        next_eval = None
        if eval_every_minutes is not None:  # the next multiple of the interval
            every = 60 * eval_every_minutes
            next_eval = (math.floor(self.train_seconds / every) + 1) * 60 * eval_every_minutes
        bar = self._progress_bar(None if budgeted else stop)
        clock = time.process_time if self.config.clock == "process" else time.perf_counter
        return FitState(stop=stop, clock=clock, last=clock(), start_seconds=self.train_seconds,
                        on_epoch_end=on_epoch_end, on_eval=on_eval,
                        eval_every_minutes=eval_every_minutes, next_eval=next_eval, bar=bar)

    def _progress_bar(self, total: int | None) -> Any:
        """A text progress bar (rank 0, with ``config.progress``; else ``None``)."""
        if not (self.config.progress and self.rank == 0):
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=self.step, ascii=True, file=sys.stdout,
                    mininterval=5, dynamic_ncols=False, ncols=100, desc="train")

    def _finished(self) -> bool:
        """True once this call of :meth:`fit` is over: at its last step, or out of time."""
        return self.step >= self.fit_state.stop or self.budget_spent()

    def budget_spent(self) -> bool:
        """True once the run is over: the time budget is spent, if there is one."""
        budget = self.config.time_budget_minutes
        return budget is not None and self.train_seconds >= 60.0 * budget

    def _count_step(self, batch_size: int) -> None:
        """Count a step's images (all processes together) and add its time to the training time."""
        state = self.fit_state
        state.seen += batch_size * self.world
        now = state.clock()
        self.train_seconds += now - state.last
        state.last = now

    def _restart_clock(self) -> None:
        """Count training time from now on: what ran since the last reading was not training."""
        self.fit_state.last = self.fit_state.clock()

    def _after_step(self, stats: dict) -> None:
        """What follows a step, none of it training time: the progress bar, then a metrics line, a
        checkpoint and an evaluation when they are due."""
        done = self._finished()
        self._show_progress(stats)
        if self.step % self.config.log_every == 0 or done:
            self._log_step(stats)
        if self.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        if not done:  # the last evaluation comes from _end_fit
            self._evaluate_if_due()
        self._restart_clock()

    def _show_progress(self, stats: dict) -> None:
        """Advance the progress bar by one step, showing the loss and the learning rate."""
        bar = self.fit_state.bar
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", refresh=False)

    def _log_step(self, stats: dict) -> None:
        """A ``metrics.jsonl`` line: the step's statistics, the training time, the throughput."""
        elapsed = self.train_seconds - self.fit_state.start_seconds
        self.log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                  "time": self.train_seconds,
                  "images_per_s": self.fit_state.seen / max(elapsed, 1e-9), **stats})

    def log(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only)."""
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _evaluate_if_due(self) -> None:
        """Evaluate once ``eval_every_minutes`` more of training time have passed."""
        state = self.fit_state
        if state.next_eval is not None and self.train_seconds >= state.next_eval:
            self._evaluate()
            state.next_eval += 60 * state.eval_every_minutes

    def _evaluate(self) -> None:
        """Call ``on_eval`` and log what it returns with the step and the training time."""
        on_eval = self.fit_state.on_eval
        if on_eval is not None:
            self.log({"event": "eval", "step": self.step, "train_time": self.train_seconds,
                      **on_eval(self)})

    def _end_epoch(self) -> None:
        """At the end of an epoch, or where this call of :meth:`fit` stops: a checkpoint, then
        ``on_epoch_end`` (at epoch ends only)."""
        at_epoch_end = self.step % self.steps_per_epoch == 0
        if at_epoch_end or self._finished():
            self.save_checkpoint()
            if self.fit_state.on_epoch_end is not None and at_epoch_end:
                self.fit_state.on_epoch_end(self, self.step // self.steps_per_epoch)
            self._restart_clock()

    def _end_fit(self) -> None:
        """Close the progress bar; evaluate a last time if the whole run is over (not only this
        call)."""
        if self.fit_state.bar is not None:
            self.fit_state.bar.close()
        if self.step >= self.total_steps or self.budget_spent():
            self._evaluate()

    def eval_model(self) -> nn.Module:
        """The model to evaluate: the EMA if there is one."""
        return self.ema.module if self.ema is not None else self.model
