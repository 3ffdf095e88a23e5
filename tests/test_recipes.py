"""Shared training settings: the recipe's config, its smoke version and its data on disk."""
import json

import pytest
import torch

from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.recipes import (
    CPU_SHAPES,
    GPU_SHAPES,
    PAPER_D0,
    QUICK_SHAPES,
    ShapesRecipe,
    forced_match_share,
    recipe_for,
    write_shapes_data,
)
from effnet_tutorial.train import Trainer


def test_recipe_becomes_a_train_config():
    config = CPU_SHAPES.train_config()
    assert (config.optimizer, config.lr, config.batch_size) == (
        "adamw", CPU_SHAPES.lr, CPU_SHAPES.batch_size)
    assert config.time_budget_minutes == CPU_SHAPES.minutes == 30.0
    assert config.ema_decay == 0.9998 and config.ema_warmup and config.clip_grad_norm == 10.0
    assert CPU_SHAPES.train_config(progress=False).progress is False
    assert config.clock == "process" and GPU_SHAPES.train_config().clock == "wall"


def test_device_picks_the_recipe():
    assert recipe_for(torch.device("cpu")) is CPU_SHAPES
    assert recipe_for(torch.device("cuda", 0)) is GPU_SHAPES
    assert GPU_SHAPES.image_size == 512 and CPU_SHAPES.image_size == 256


def test_quick_recipe_is_a_short_cpu_run_at_128():
    # Part III's chapter 11 trains it in the notebook: it must stay minutes, on a CPU clock
    config = QUICK_SHAPES.train_config(progress=False)
    assert QUICK_SHAPES.image_size == 128 and QUICK_SHAPES.image_size % 128 == 0
    assert config.time_budget_minutes == QUICK_SHAPES.minutes <= 3 and config.clock == "process"
    assert QUICK_SHAPES.min_size >= 16 and QUICK_SHAPES.max_objects <= 2
    smoke = QUICK_SHAPES.smoke()
    assert smoke.minutes < 1 and smoke.image_size == QUICK_SHAPES.image_size


def test_smoke_recipe_is_small_and_keeps_the_rest():
    smoke = CPU_SHAPES.smoke()
    assert smoke.train_images <= 16 and smoke.minutes < 1
    assert (smoke.image_size, smoke.optimizer, smoke.lr) == (
        CPU_SHAPES.image_size, CPU_SHAPES.optimizer, CPU_SHAPES.lr)


def test_shapes_data_is_written_once_per_setting(tmp_path):
    recipe = ShapesRecipe(image_size=64, train_images=3, val_images=2, max_objects=2, min_size=8)
    root = write_shapes_data(tmp_path, recipe)
    train = CocoDetection(root / "images" / "train", root / "annotations" / "instances_train.json")
    assert len(train) == 3 and train.read_image(0).shape == (3, 64, 64)
    stamp = json.loads((root / "recipe.json").read_text())
    assert stamp["train_images"] == 3 and stamp["image_size"] == 64
    before = (root / "images" / "train" / "000000.png").stat().st_mtime_ns
    write_shapes_data(tmp_path, recipe)  # same setting: nothing rewritten
    assert (root / "images" / "train" / "000000.png").stat().st_mtime_ns == before
    write_shapes_data(tmp_path, ShapesRecipe(image_size=64, train_images=4, val_images=2,
                                             max_objects=2))
    assert len(list((root / "images" / "train").glob("*.png"))) == 4


def test_frozen_recipe():
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        CPU_SHAPES.lr = 1.0


def test_command_line_recipes_are_the_papers_and_the_books():
    from effnet_tutorial.recipes import COMMAND_LINE_RECIPES
    from effnet_tutorial.train import TrainConfig

    paper, cpu = COMMAND_LINE_RECIPES["paper"], COMMAND_LINE_RECIPES["cpu"]
    defaults = TrainConfig()
    assert (paper["epochs"], paper["batch_size"], paper["optimizer"], paper["lr"]) == (
        defaults.epochs, defaults.batch_size, "sgd", None)
    assert (paper["jitter_min"], paper["jitter_max"], paper["minutes"]) == (0.1, 2.0, None)
    assert (cpu["model"], cpu["image_size"], cpu["minutes"]) == ("efficientdet_d0", 256, 30.0)
    assert (cpu["optimizer"], cpu["lr"], cpu["batch_size"]) == ("adamw", CPU_SHAPES.lr, 8)
    assert (cpu["jitter_min"], cpu["jitter_max"]) == CPU_SHAPES.jitter
    assert cpu["clock"] == CPU_SHAPES.clock and cpu["workers"] == CPU_SHAPES.num_workers
    assert set(paper) == set(cpu)


def test_gpu_recipe_budgets_epochs_so_every_gpu_trains_the_same_steps():
    config = GPU_SHAPES.train_config()
    assert GPU_SHAPES.minutes is None and config.time_budget_minutes is None
    assert config.epochs == GPU_SHAPES.epochs == 20.0
    assert GPU_SHAPES.steps() == 20 * (6000 // 16) == 7500
    assert GPU_SHAPES.budget() == "20 epochs (7,500 steps)"
    assert CPU_SHAPES.steps() is None and CPU_SHAPES.budget() == "30 minutes of process CPU-time"
    # the smallest object after the smallest jitter factor stays above the ~22.5 px anchor limit
    assert GPU_SHAPES.min_size * GPU_SHAPES.jitter[0] >= 22.5
    smoke = GPU_SHAPES.smoke()
    assert smoke.epochs == 1.0 and smoke.minutes is None and smoke.train_images <= 16


def test_recipe_steps_are_the_trainers_steps():
    recipe = ShapesRecipe(image_size=64, train_images=10, batch_size=4, minutes=None, epochs=3.0)
    trainer = Trainer(torch.nn.Linear(1, 1), list(range(10)), recipe.train_config(), "unused")
    assert trainer.total_steps == recipe.steps() == 6


def test_recipe_needs_exactly_one_budget():
    with pytest.raises(ValueError, match="exactly one budget"):
        ShapesRecipe(minutes=None)
    with pytest.raises(ValueError, match="exactly one budget"):
        ShapesRecipe(minutes=30.0, epochs=2.0)


def test_paper_d0_is_the_papers_global_batch_and_learning_rate():
    assert PAPER_D0.batch_size == 128 and PAPER_D0.optimizer == "sgd"
    assert PAPER_D0.base_lr() == pytest.approx(0.16) and PAPER_D0.epochs == 300.0


def test_forced_match_share_follows_the_object_sizes():
    shares, n = forced_match_share(GPU_SHAPES, scales=(GPU_SHAPES.jitter[0], 1.0), num_images=30)
    assert n > 30
    assert shares[1.0] <= shares[GPU_SHAPES.jitter[0]] <= 0.2  # smaller objects, fewer anchors fit
    tiny = ShapesRecipe(image_size=512, max_objects=6, min_size=8.0, max_size=0.03)
    tiny_shares, _ = forced_match_share(tiny, num_images=30)
    assert tiny_shares[1.0] > 0.9  # objects of 8-15 px: no D0 anchor reaches IoU 0.5
    with pytest.raises(ValueError, match="positive"):
        forced_match_share(GPU_SHAPES, scales=(0.0,))
