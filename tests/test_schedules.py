"""The shared learning-rate schedule and weight-decay groups, and that both trainers use them."""
import json

import pytest
import torch
from torch import nn

from effnet_tutorial import create_model
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.shapes import write_coco_dataset
from effnet_tutorial.data.transforms import train_transforms
from effnet_tutorial.schedules import cosine_decay, warmup_cosine_lr, weight_decay_groups
from effnet_tutorial.train import SeededAugmentation, TrainConfig, Trainer

# 100 steps, 10 of warm-up from 0.01 to 0.1, then a cosine down to 0.001.
TOTAL, WARMUP, PEAK, INIT, FLOOR = 100, 10, 0.1, 0.01, 0.001


def lr(step: int) -> float:
    return warmup_cosine_lr(step, TOTAL, WARMUP, PEAK, INIT, FLOOR)


def test_warmup_starts_at_its_initial_value():
    assert lr(0) == INIT
    assert warmup_cosine_lr(0, TOTAL, WARMUP, PEAK) == 0.0  # the default start


def test_warmup_is_a_straight_line_that_ends_at_the_peak():
    assert lr(5) == pytest.approx((INIT + PEAK) / 2, rel=1e-12)
    assert lr(9) == pytest.approx(INIT + (PEAK - INIT) * 0.9, rel=1e-12)  # still below the peak
    assert lr(WARMUP) == PEAK
    steps = [lr(s + 1) - lr(s) for s in range(WARMUP - 1)]
    assert steps == pytest.approx([(PEAK - INIT) / WARMUP] * (WARMUP - 1), rel=1e-9)


def test_cosine_midpoint_is_halfway_between_peak_and_floor():
    mid = WARMUP + (TOTAL - WARMUP) // 2
    assert lr(mid) == pytest.approx((PEAK + FLOOR) / 2, rel=1e-12)
    assert lr(mid - 20) > lr(mid) > lr(mid + 20)


def test_schedule_ends_at_the_floor_and_stays_there():
    assert lr(TOTAL) == FLOOR
    assert lr(TOTAL + 50) == FLOOR
    assert warmup_cosine_lr(TOTAL, TOTAL, WARMUP, PEAK) == 0.0


def test_without_warmup_the_cosine_starts_at_the_peak():
    assert warmup_cosine_lr(0, 10, 0, 1.0) == 1.0
    assert warmup_cosine_lr(5, 10, 0, 1.0) == pytest.approx(0.5, rel=1e-12)


def test_cosine_decay_ends():
    assert cosine_decay(0.0, 2.0, 0.5) == 2.0
    assert cosine_decay(0.5, 2.0, 0.5) == pytest.approx(1.25, rel=1e-12)
    assert cosine_decay(1.0, 2.0, 0.5) == 0.5


class Net(nn.Module):
    """Every kind of parameter: conv and linear weights, biases, BN, a fusion vector, a scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.fusion = nn.Parameter(torch.ones(2))
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)


def test_groups_put_each_trainable_parameter_in_the_right_group_once():
    net = Net()
    decay, no_decay = weight_decay_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: sorted(id(p) for p in ps)  # noqa: E731  (sorted: duplicates would show)
    assert ids(decay["params"]) == ids([net.conv.weight, net.fc.weight])
    assert ids(no_decay["params"]) == ids([net.bn.weight, net.bn.bias, net.fc.bias, net.fusion,
                                           net.scale])


def test_groups_of_a_detector_cover_it_exactly():
    model = create_model("tf_efficientdet_d0", num_classes=4, fpn_channels=16, fpn_repeats=1,
                         head_repeats=1)
    decay, no_decay = weight_decay_groups(model, 4e-5)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(set(ids)) == len(ids)  # each parameter once
    assert set(ids) == {id(p) for p in model.parameters()}
    assert any(p.ndim == 1 for p in no_decay["params"]) and decay["params"]


# ----------------------------------------------------------------------------- the trainers


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_coco_dataset(root, "train", 8, seed=1, height=64, width=64, max_objects=3)
    return root


def make_trainer(data_root, out, **overrides):
    raw = CocoDetection(data_root / "images" / "train",
                        data_root / "annotations" / "instances_train.json")
    config = TrainConfig(**{"epochs": 2, "batch_size": 2, "lr": 0.02, "warmup_epochs": 0.5,
                            "min_lr": 1e-4, "num_workers": 0, "progress": False, "log_every": 1,
                            "checkpoint_every": 1000, **overrides})
    torch.manual_seed(0)
    model = create_model("tf_efficientdet_d0", num_classes=4, fpn_channels=16, fpn_repeats=1,
                         head_repeats=1)
    return Trainer(model, SeededAugmentation(raw, train_transforms(64, (0.5, 1.5))), config, out)


@pytest.mark.slow
def test_trainer_steps_at_the_schedules_learning_rate(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, epochs=1)  # 4 steps: 2 of warm-up, 2 of cosine
    used = []
    optimizer_step = trainer.optimizer.step

    def step(*args, **kwargs):
        used.append({g["lr"] for g in trainer.optimizer.param_groups})
        return optimizer_step(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.fit()
    expected = [warmup_cosine_lr(s, 4, 2, 0.02, 0.002, 1e-4) for s in range(4)]
    assert (trainer.total_steps, trainer.warmup_steps) == (4, 2)
    assert used == [{x} for x in expected]  # exactly, in every parameter group
    logged = [json.loads(line)["lr"] for line in trainer.metrics_path.read_text().splitlines()]
    assert logged == expected


def test_trainer_current_lr_is_the_schedule(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, warmup_lr_init=0.005)
    for s in range(trainer.total_steps + 2):
        trainer.step = s
        assert trainer.current_lr() == warmup_cosine_lr(s, 8, 2, 0.02, 0.005, 1e-4)
    # With a time budget, the cosine runs over the training time once the warm-up is over.
    budgeted = make_trainer(data_root, tmp_path, time_budget_minutes=0.5)
    budgeted.step, budgeted.train_seconds = 1, 20.0
    assert budgeted.current_lr() == warmup_cosine_lr(1, 8, 2, 0.02, 0.002, 1e-4)
    for seconds in (0.0, 7.5, 15.0, 29.0, 30.0, 45.0):
        budgeted.step, budgeted.train_seconds = 5, seconds
        assert budgeted.current_lr() == cosine_decay(min(1.0, seconds / 30.0), 0.02, 1e-4)
