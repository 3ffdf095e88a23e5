"""Named training settings that the book, the command line and the benchmarks share.

A setting that appears in a chapter and in a benchmark must be the same object, not two copies of
the same numbers: :data:`CPU_SHAPES` is the from-scratch D0 run that Part IV's training chapter
runs on a CPU and that ``benchmarks/train_d0_cpu.py`` runs for our D0 and for effdet's D0.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .train import TrainConfig


@dataclass(frozen=True)
class ShapesRecipe:
    """A D0 run on the synthetic shapes dataset: the data, the input size and the training knobs.

    The detector is ``efficientdet_d0`` from scratch (no pretrained weights) at ``image_size``
    pixels. The budget is either ``minutes`` of training time (evaluation excluded), with the
    cosine schedule spread over that time, or ``epochs`` over the training split (set
    ``minutes=None``): a time budget makes the result depend on the machine's speed, an epoch
    budget makes every machine train the same steps. On a CPU the time is the process's CPU time
    (``clock="process"``): run with one thread, that is the time the run takes on an idle core,
    whatever else shares the machine.
    """

    image_size: int = 256
    train_images: int = 3000
    val_images: int = 200
    max_objects: int = 3
    min_size: float = 24.0  # smallest object side in pixels (of 256)
    max_size: float = 0.5  # largest object side as a fraction of the image side
    data_seed: int = 0
    jitter: tuple[float, float] = (0.75, 1.25)  # scale jitter range of the training transform
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 5e-3  # AdamW peak; 10-minute CPU trials learned far faster than at 2e-3
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.2
    ema_decay: float = 0.9998  # the paper's, with the EMA warm-up of TrainConfig
    minutes: float | None = 30.0
    epochs: float | None = None  # the budget in passes over the training split, with minutes=None
    eval_every_minutes: float = 3.0
    seed: int = 0
    num_workers: int = 0  # data-loading processes (0 on a 2-core CPU: the model needs the cores)
    clock: str = "process"  # training time as this process's CPU time (see TrainConfig.clock)

    def __post_init__(self) -> None:
        if (self.minutes is None) == (self.epochs is None):
            raise ValueError(f"a recipe needs exactly one budget, minutes or epochs; got "
                             f"minutes={self.minutes!r}, epochs={self.epochs!r}")

    def train_config(self, **overrides) -> TrainConfig:
        """The :class:`~effnet_tutorial.train.TrainConfig` of this recipe (fields overridable)."""
        budget = ({"time_budget_minutes": self.minutes} if self.epochs is None
                  else {"epochs": self.epochs})
        config = TrainConfig(
            optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size,
            weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
            ema_decay=self.ema_decay, seed=self.seed, num_workers=self.num_workers,
            clock=self.clock, log_every=20, checkpoint_every=200, **budget)
        return replace(config, **overrides)

    def steps(self) -> int | None:
        """Training steps of an epoch budget, counted as the trainer counts them (whole batches
        per epoch); ``None`` for a time budget, whose step count depends on the machine."""
        if self.epochs is None:
            return None
        return max(1, int(round(self.epochs * max(1, self.train_images // self.batch_size))))

    def budget(self) -> str:
        """The budget in words, e.g. ``"30 minutes of process CPU-time"`` or ``"20 epochs (7,500
        steps)"``."""
        if self.epochs is None:
            clock = {"process": "process CPU-time", "wall": "wall-clock time"}[self.clock]
            return f"{self.minutes:g} minutes of {clock}"
        return f"{self.epochs:g} epochs ({self.steps():,} steps)"

    def command_line(self) -> dict[str, object]:
        """The values of ``python -m effnet_tutorial train`` flags that make this recipe's run."""
        config = self.train_config()
        return {"model": "efficientdet_d0", "image_size": self.image_size, "epochs": config.epochs,
                "minutes": self.minutes, "batch_size": self.batch_size,
                "optimizer": self.optimizer, "lr": self.lr, "warmup_epochs": self.warmup_epochs,
                "ema_decay": self.ema_decay, "jitter_min": self.jitter[0],
                "jitter_max": self.jitter[1], "workers": self.num_workers,
                "log_every": config.log_every, "checkpoint_every": config.checkpoint_every,
                "clock": self.clock}

    def smoke(self) -> "ShapesRecipe":
        """The same recipe shrunk to seconds, for CI (``BOOK_SMOKE=1``)."""
        budget = {"minutes": 0.1} if self.epochs is None else {"epochs": 1.0}
        return replace(self, train_images=16, val_images=8, eval_every_minutes=0.05, batch_size=4,
                       **budget)


#: The from-scratch CPU run of Part IV (and of ``benchmarks/train_d0_cpu.py``).
CPU_SHAPES = ShapesRecipe()

#: The GPU run of Part IV, D0 at its native 512 pixels, up to six objects per image, for 20 epochs
#: of 6,000 images (7,500 steps of 16), the same steps on every GPU. Objects are at least 32 pixels
#: and the scale jitter at least 0.75, so the smallest object the network sees is 24 pixels, above
#: the ~22.5 pixels below which no anchor reaches IoU 0.5 (Chapter 10), so every object can be
#: matched by its IoU, not only by force (``anchors.best_anchor_iou`` measures it).
GPU_SHAPES = ShapesRecipe(image_size=512, train_images=6000, val_images=500, max_objects=6,
                          min_size=32.0, jitter=(0.75, 1.5), batch_size=16, minutes=None,
                          epochs=20.0, eval_every_minutes=3.0, num_workers=2, clock="wall")

#: The paper's D0 training (Section 5.1 of arXiv v7) is SGD with momentum 0.9 and
#: learning rate 0.16 (0.08 per 64 images) warmed up over the first epoch and then cosine-decayed,
#: weight decay 4e-5, 300 epochs at global batch 128 (32 TPUv3 cores, 4 images each). The package's
#: ``TrainConfig`` counts the batch per process: on 8 GPUs pass ``batch_size=16``.
PAPER_D0 = TrainConfig(batch_size=128)

#: A D0 trained for two and a half minutes of CPU time on easy shapes at 128 pixels (at most two
#: objects, none smaller than 20 pixels), so that Part III's chapter on the focal loss measures the
#: scores of a detector partway through training rather than invented ones. Far from converged: a
#: few hundred steps (Part IV trains for half an hour, and ships that detector:
#: ``checkpoints.book_detector()``).
QUICK_SHAPES = ShapesRecipe(image_size=128, train_images=2000, val_images=100, max_objects=2,
                            min_size=20.0, max_size=0.6, minutes=2.5, eval_every_minutes=2.5)


def paper_command_line() -> dict[str, object]:
    """The flag values of the paper's D0 recipe (:class:`~effnet_tutorial.train.TrainConfig`'s
    defaults, D0 at its own 512 pixels, scale jitter 0.1-2.0): 300 epochs of SGD, days on GPUs."""
    config = TrainConfig()  # batch 16 per process: PAPER_D0's 128 on 8 GPUs
    return {"model": "tf_efficientdet_d0", "image_size": None, "epochs": config.epochs,
            "minutes": None, "batch_size": config.batch_size, "optimizer": config.optimizer,
            "lr": config.lr, "warmup_epochs": config.warmup_epochs, "ema_decay": config.ema_decay,
            "jitter_min": 0.1, "jitter_max": 2.0, "workers": config.num_workers,
            "log_every": config.log_every, "checkpoint_every": config.checkpoint_every,
            "clock": config.clock}


#: What ``python -m effnet_tutorial train --recipe NAME`` starts from; explicit flags override
#: each value. ``paper``: the paper's D0 recipe; ``cpu``: the book's from-scratch CPU run
#: (:data:`CPU_SHAPES`: D0 at 256 pixels, AdamW, 30 minutes of CPU time).
COMMAND_LINE_RECIPES: dict[str, dict[str, object]] = {
    "paper": paper_command_line(), "cpu": CPU_SHAPES.command_line()}


def recipe_for(device) -> ShapesRecipe:
    """:data:`GPU_SHAPES` on a CUDA device, :data:`CPU_SHAPES` otherwise."""
    return GPU_SHAPES if getattr(device, "type", str(device)) == "cuda" else CPU_SHAPES


def write_shapes_data(root: str | Path, recipe: ShapesRecipe = CPU_SHAPES) -> Path:
    """Generate the recipe's train and val splits into ``root`` (COCO layout) unless they are
    already there with the same settings; returns ``root``.
    """
    import json

    from .data.shapes import write_coco_dataset

    root = Path(root)
    stamp = root / "recipe.json"
    wanted = {k: getattr(recipe, k) for k in ("image_size", "train_images", "val_images",
                                               "max_objects", "min_size", "max_size", "data_seed")}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return root
    for split, n, seed in (("train", recipe.train_images, recipe.data_seed),
                           ("val", recipe.val_images, recipe.data_seed + 1)):
        write_coco_dataset(root, split, n, seed, recipe.image_size, recipe.image_size,
                           recipe.max_objects, recipe.min_size, recipe.max_size)
    stamp.write_text(json.dumps(wanted))
    return root


def forced_match_share(recipe: ShapesRecipe, scales: tuple[float, ...] = (1.0,),
                       num_images: int = 200, seed: int = 1234) -> tuple[dict[float, float], int]:
    """The share of a recipe's objects that no D0 anchor overlaps with IoU 0.5, per scale.

    Scenes are drawn as the recipe's dataset draws them (``num_images`` of them, from ``seed``),
    their boxes scaled by each of ``scales`` as the training transform's scale jitter scales them
    (about the image's centre; the smallest jitter factor is the case that matters), and each
    box's best IoU with D0's anchors at the recipe's input size is measured
    (:func:`~effnet_tutorial.anchors.best_anchor_iou`). Those below 0.5 are matched only by
    force. Returns ``({scale: share}, number of objects)``.
    """
    import numpy as np
    import torch

    from .anchors import best_anchor_iou, generate_anchors
    from .data.shapes import render_scene

    if not scales or not all(s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    rng = np.random.default_rng(seed)
    size = recipe.image_size
    boxes = torch.from_numpy(np.concatenate([
        render_scene(rng, size, size, recipe.max_objects, recipe.min_size, recipe.max_size).boxes
        for _ in range(num_images)]))
    if len(boxes) == 0:
        raise ValueError("the scenes drawn hold no objects: raise num_images")
    anchors = generate_anchors(size)
    shares = {s: float((best_anchor_iou(boxes * s + size / 2 * (1 - s), anchors) < 0.5)
                       .float().mean()) for s in scales}
    return shares, len(boxes)
