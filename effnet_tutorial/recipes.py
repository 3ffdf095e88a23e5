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
    pixels; training stops after ``minutes`` of training time (evaluation excluded), with the
    cosine schedule spread over that time. On a CPU the time is the process's CPU time
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
    minutes: float = 30.0
    eval_every_minutes: float = 3.0
    seed: int = 0
    num_workers: int = 0  # data-loading processes (0 on a 2-core CPU: the model needs the cores)
    clock: str = "process"  # training time as this process's CPU time (see TrainConfig.clock)

    def train_config(self, **overrides) -> TrainConfig:
        """The :class:`~effnet_tutorial.train.TrainConfig` of this recipe (fields overridable)."""
        config = TrainConfig(
            optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size,
            weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
            ema_decay=self.ema_decay, time_budget_minutes=self.minutes, seed=self.seed,
            num_workers=self.num_workers, clock=self.clock, log_every=20, checkpoint_every=200)
        return replace(config, **overrides)

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
        return replace(self, train_images=16, val_images=8, minutes=0.1, eval_every_minutes=0.05,
                       batch_size=4)


#: The from-scratch CPU run of Part IV (and of ``benchmarks/train_d0_cpu.py``).
CPU_SHAPES = ShapesRecipe()

#: The GPU run of Part IV, D0 at its native 512 pixels on the full synthetic dataset (up to six
#: objects per image, sides from 8 pixels), sized for about 30 minutes of training on a Colab T4.
GPU_SHAPES = ShapesRecipe(image_size=512, train_images=6000, val_images=500, max_objects=6,
                          min_size=8.0, jitter=(0.1, 2.0), batch_size=16, eval_every_minutes=5.0,
                          num_workers=2, clock="wall")

#: A D0 trained for two and a half minutes of CPU time on easy shapes at 128 pixels (at most two
#: objects, none smaller than 20 pixels), so that Part III's chapters on the focal loss and on
#: EfficientDet look at a real detector's scores and detections rather than at random weights or
#: invented numbers. Far from converged: a few hundred steps (Part IV trains for half an hour).
QUICK_SHAPES = ShapesRecipe(image_size=128, train_images=2000, val_images=100, max_objects=2,
                            min_size=20.0, max_size=0.6, minutes=2.5, eval_every_minutes=2.5)


def paper_command_line() -> dict[str, object]:
    """The flag values of the paper's D0 recipe (:class:`~effnet_tutorial.train.TrainConfig`'s
    defaults, D0 at its own 512 pixels, scale jitter 0.1-2.0): 300 epochs of SGD, days on GPUs."""
    config = TrainConfig()
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
