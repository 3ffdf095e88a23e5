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
of (seed, epoch, index), not of how many batches were drawn before. Only finite weights are ever
saved: a NaN or infinite loss, gradient or weight stops training with a message that names the
last good checkpoint (or says there is none). Checkpoints describe themselves (a ``"meta"`` entry,
see :mod:`~effnet_tutorial.checkpoints`) and load with ``torch.load(weights_only=True)``; resuming
checks that the checkpoint's model, classes and batch are this trainer's. :meth:`Trainer.fit`
holds a lock on the output folder, checks it is writable first, and a failed save removes its
partial file and says why (the run folder's machinery is :mod:`~effnet_tutorial.runs`). Several
GPUs (or CPU processes) train with PyTorch's DistributedDataParallel when started with
``torchrun``.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .anchors import anchors_for, assign_targets_batch, feature_sizes, targets_by_level
from .checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_meta,
    describe_model,
    read_checkpoint,
)
from .data.transforms import collate
from .losses import detection_loss
from .runs import (
    RunLock,
    atomic_save,
    check_writable,
    drop_metrics_after,
    rng_state,
    run_mismatches,
    set_rng_state,
)
from .schedules import cosine_decay, warmup_cosine_lr, weight_decay_groups
from .utils import try_gpu


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the paper's D0 recipe."""

    epochs: float = 300.0
    batch_size: int = 16  # per process; at least 2 (batch norm normalises over the batch)
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
        """Refuse values that would fail, or silently do nothing sensible, later in the run."""
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.clock not in ("wall", "process"):
            raise ValueError(f"clock must be 'wall' or 'process', got {self.clock!r}")
        if not (isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 2):
            raise ValueError(
                f"batch_size must be an integer >= 2, got {self.batch_size!r}: batch norm "
                "normalises each channel over the batch, and with one image the smallest feature "
                "maps have a single value per channel (PyTorch: 'Expected more than 1 value per "
                "channel'); the paper uses 64 images per step")
        _require_number("epochs", self.epochs, 0.0, strict=True)
        _require_number("lr", self.lr, 0.0, strict=True, optional=True)
        _require_number("warmup_epochs", self.warmup_epochs, 0.0)
        _require_number("warmup_lr_init", self.warmup_lr_init, 0.0, optional=True)
        _require_number("min_lr", self.min_lr, 0.0)
        _require_number("momentum", self.momentum, 0.0, below=1.0)
        _require_number("weight_decay", self.weight_decay, 0.0)
        _require_number("clip_grad_norm", self.clip_grad_norm, 0.0, strict=True)
        _require_number("ema_decay", self.ema_decay, 0.0, below=1.0)
        _require_number("time_budget_minutes", self.time_budget_minutes, 0.0, strict=True,
                        optional=True)
        for name in ("num_workers", "log_every", "checkpoint_every"):
            value, least = getattr(self, name), 0 if name == "num_workers" else 1
            if not (isinstance(value, numbers.Integral) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")

    def base_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: ``lr``, or by default 0.08 per 64 images of the **global**
        batch (``batch_size`` per process times ``world_size`` processes) for SGD, the reference's
        linear scaling rule, and 1e-3 for AdamW."""
        if self.lr is not None:
            return self.lr
        return 0.08 * self.batch_size * world_size / 64 if self.optimizer == "sgd" else 1e-3


def _require_number(name: str, value: object, least: float, strict: bool = False,
                    below: float | None = None, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= ``least`` (> with ``strict``),
    below ``below`` if given, or None when ``optional``."""
    if value is None and optional:
        return
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > least if strict else value >= least) and (below is None or value < below))
    if not ok:
        bound = f"{'>' if strict else '>='} {least:g}" + (f" and < {below:g}" if below else "")
        raise ValueError(f"{name} must be a finite number {bound}"
                         f"{' (or None)' if optional else ''}, got {value!r}")


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

    @property
    def class_names(self) -> list[str] | None:
        """The wrapped dataset's class names, if it has them (checkpoints record them)."""
        return getattr(self.dataset, "class_names", None)

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
    to ``output_dir``: ``last.pth`` (the checkpoint to resume from: model, EMA, optimiser state,
    step, RNG states), ``model.pth`` (the EMA weights alone, about a third of the size, for
    evaluation and prediction), ``metrics.jsonl`` (one JSON object per logged step or
    evaluation). Both checkpoint files carry :meth:`meta`. ``class_names`` (default: the
    dataset's ``class_names``, if any) and ``run_info`` (JSON-able settings of the caller, such
    as the command line's augmentation) are recorded there too.

    The trainer writes into an existing folder (a notebook re-running a cell); the command line
    refuses a folder that holds a run unless told to resume or overwrite it.
    """

    def __init__(self, model: nn.Module, train_set: torch.utils.data.Dataset, config: TrainConfig,
                 output_dir: str | os.PathLike, collate_fn: Callable = collate,
                 class_names: Sequence[str] | None = None,
                 run_info: Mapping[str, Any] | None = None) -> None:
        if len(train_set) == 0:
            raise ValueError("the training set is empty")
        self.config, self.train_set, self.collate_fn = config, train_set, collate_fn
        self.output_dir = Path(output_dir)
        self.rank, self.world, self.device = setup_distributed()
        self._check_set_size(len(train_set))
        names = class_names if class_names is not None else getattr(train_set, "class_names", None)
        self.class_names = list(names) if names is not None else None
        self.run_info = dict(run_info or {})
        torch.manual_seed(config.seed)
        on_cuda = self.device.type == "cuda"
        self.use_amp = config.amp and on_cuda
        self.memory_format = (torch.channels_last if config.channels_last and on_cuda
                              else torch.contiguous_format)
        if config.sync_bn and self.world > 1:
            if on_cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
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
        #: ``(path, step)`` of the newest checkpoint this trainer wrote or loaded: finite weights.
        self.last_good: tuple[Path, int] | None = None

    def _check_set_size(self, n: int) -> None:
        """Every process needs a batch of at least 2 images (batch norm); refuse less."""
        per_step = self.config.batch_size * self.world
        if self.world > 1 and n < per_step:
            raise ValueError(f"the training set has {n} images, fewer than one batch of "
                             f"{self.config.batch_size} for each of {self.world} processes; "
                             "lower batch_size or use fewer processes")
        if n < 2:
            raise ValueError(f"the training set has {n} image: batch norm needs batches of at "
                             "least 2 images")

    # ----------------------------------------------------------------------------- state
    def meta(self) -> dict:
        """What a checkpoint says about itself: the model
        (:func:`~effnet_tutorial.checkpoints.describe_model`), its class names, the run's settings
        (``train_config``, ``batch_size``, ``world_size``, ``run_info``) and the format version."""
        return {"format_version": FORMAT_VERSION, **describe_model(self.model),
                "class_names": self.class_names, "train_config": asdict(self.config),
                "batch_size": self.config.batch_size, "world_size": self.world,
                "run_info": self.run_info}

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly, in types that
        ``torch.load(weights_only=True)`` reads."""
        return {"meta": self.meta(), "model": self.model.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "train_seconds": self.train_seconds, "rng": rng_state(),
                "config": asdict(self.config),
                "num_classes": getattr(self.model, "num_classes", None)}

    def save_checkpoint(self, name: str = "last.pth",
                        model_file: str | None = "model.pth") -> Path | None:
        """Write a checkpoint atomically (rank 0 only), and ``model_file`` beside it: the weights
        evaluation uses (the EMA's) with the meta, without the optimiser state; returns the
        checkpoint's path.

        Raises ``FloatingPointError`` instead of saving non-finite weights, and ``OSError``
        (naming the path and the cause) if the file cannot be written.
        """
        if self.rank != 0:
            return None
        self._check_weights_finite()
        path = self.output_dir / name
        atomic_save(self.state_dict(), path)
        self.last_good = (path, self.step)
        if model_file:
            meta = {**self.meta(), "weights": "ema" if self.ema else "model", "step": self.step}
            atomic_save({"meta": meta, "model": self.eval_model().state_dict()},
                        self.output_dir / model_file)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a run from :meth:`save_checkpoint`'s file to continue it.

        The checkpoint's meta must describe this trainer's run (model, classes, input size,
        batch, optimizer; :func:`~effnet_tutorial.runs.run_mismatches`), else a ``ValueError``
        lists what differs.
        Lines of ``metrics.jsonl`` logged after the checkpoint's step (a killed run's steps that
        will now be redone) move to ``metrics.redone.jsonl``, so no step is logged twice and
        no line is lost.
        """
        path = Path(path)
        state = read_checkpoint(path, map_location=self.device)
        if not {"optimizer", "step", "model"} <= set(state):
            raise CheckpointError(
                f"{path} is not a training checkpoint (no optimiser state or step): a model file "
                "or a state dict cannot continue a run. To start a new run from its weights, "
                "build the model with create_model(..., checkpoint_path=...)")
        meta = checkpoint_meta(state)
        problems = run_mismatches(meta, self.meta()) if meta else []
        if problems:
            raise CheckpointError(f"cannot resume from {path}: " + "; ".join(problems))
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.module.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(f"{path} does not fit this trainer's model: {detail}") from err
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        set_rng_state(state["rng"])
        self.last_good = (path, self.step)
        self.drop_metrics_after(self.step)

    def drop_metrics_after(self, step: int) -> int:
        """Move the ``metrics.jsonl`` lines of steps after ``step`` (and a line cut off by a kill)
        to ``metrics.redone.jsonl``, rewriting the file atomically (rank 0 only;
        :func:`~effnet_tutorial.runs.drop_metrics_after`). Returns how many moved."""
        if self.rank != 0:
            return 0
        return drop_metrics_after(self.metrics_path, step)

    def checkpoint_bytes(self) -> int:
        """About how many bytes a save needs on disk: ``last.pth`` (model, EMA, optimiser state)
        and ``model.pth``, written beside the previous ones."""
        weights = sum(v.numel() * v.element_size() for v in self.model.state_dict().values())
        slots = 1 if self.config.optimizer == "sgd" else 2  # momentum; AdamW's two moments
        return weights * (1 + (self.ema is not None) + slots + 1)

    def _check_weights_finite(self) -> None:
        """Raise ``FloatingPointError`` if a weight of the model or the EMA is NaN or infinite."""
        models = [("model", self.model)] + ([("EMA", self.ema.module)] if self.ema else [])
        floats = [v for _, m in models for v in m.state_dict().values() if v.is_floating_point()]
        if torch.stack([torch.isfinite(v).all() for v in floats]).all():  # one device sync
            return
        for which, model in models:
            for name, value in model.state_dict().items():
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise FloatingPointError(
                        f"the {which} weight {name} became NaN or infinite at step {self.step}; "
                        f"training stopped and nothing was saved. {self._last_good_text()} "
                        "Lower the learning rate or check the data.")

    def _last_good_text(self) -> str:
        """Where the last good checkpoint is, or that there is none."""
        if self.last_good is not None:
            path, step = self.last_good
            return f"The last good checkpoint is {path} (step {step})."
        earlier = self.output_dir / "last.pth"
        note = f" ({earlier} is from an earlier run)" if earlier.exists() else ""
        return f"This run saved no checkpoint yet, so none is good{note}."

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
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            # (with mixed precision the scaler skips such a step and lowers its scale)
            raise FloatingPointError(
                f"the gradients became {float(grad_norm)} at step {self.step} (loss "
                f"{total.item()}); training stopped before they reached the weights. "
                f"{self._last_good_text()} Lower the learning rate or check the data.")
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
        the last good checkpoint is (the weights are checked again before every save)."""
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"the loss became {total.item()} at step {self.step} (class {cls_loss.item()}, box "
                f"{box_loss.item()}); training stopped. {self._last_good_text()} Lower the "
                "learning rate or check the data.")

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

        Before the first step the output folder is created, checked for writing and free space,
        and locked (:class:`~effnet_tutorial.runs.RunLock`): a second run into the same folder
        fails at once.
        """
        if (on_eval is None) != (eval_every_minutes is None):
            raise ValueError("give both eval_every_minutes and on_eval, or neither")
        with self.claim_output():
            self.fit_state = self._start_fit(max_steps, on_epoch_end, eval_every_minutes, on_eval)
            try:
                while not self._finished():
                    self.fit_epoch()
            finally:
                if self.fit_state.bar is not None:
                    self.fit_state.bar.close()
            self._end_fit()

    @contextmanager
    def claim_output(self) -> Iterator[None]:
        """Check the output folder (writable, space for a checkpoint) and hold its
        :class:`~effnet_tutorial.runs.RunLock` (rank 0; the other processes write nothing)."""
        if self.rank != 0:
            yield
            return
        check_writable(self.output_dir, self.checkpoint_bytes())
        with RunLock(self.output_dir):
            yield

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
        """Evaluate a last time if the whole run is over (not only this call)."""
        if self.step >= self.total_steps or self.budget_spent():
            self._evaluate()

    def eval_model(self) -> nn.Module:
        """The model to evaluate: the EMA if there is one."""
        return self.ema.module if self.ema is not None else self.model
