"""The trainer: schedule, resume equivalence, NaN handling, atomic checkpoints, DDP on CPU."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effnet_tutorial import create_model
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.shapes import write_coco_dataset
from effnet_tutorial.data.transforms import collate, train_transforms
from effnet_tutorial.runs import atomic_save
from effnet_tutorial.train import SeededAugmentation, TrainConfig, Trainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_coco_dataset(root, "train", 8, seed=1, height=64, width=64, max_objects=3)
    return root


def tiny_model():
    return create_model("tf_efficientdet_d0", num_classes=4, fpn_channels=16, fpn_repeats=1,
                        head_repeats=1)


def make_trainer(data_root, out, checkpoint_every=1000, **overrides):
    raw = CocoDetection(data_root / "images" / "train",
                        data_root / "annotations" / "instances_train.json")
    train_set = SeededAugmentation(raw, train_transforms(64, (0.5, 1.5)), seed=0)
    config = TrainConfig(epochs=2, batch_size=2, lr=0.02, warmup_epochs=0.5, num_workers=0,
                         progress=False, log_every=1, checkpoint_every=checkpoint_every,
                         **overrides)
    torch.manual_seed(0)
    return Trainer(tiny_model(), train_set, config, out)


def test_one_process_steps_the_model_itself_and_batches_with_the_data_collate(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path)
    assert trainer.step_model is trainer.model  # DistributedDataParallel with several processes
    assert trainer.collate_fn is collate
    images, targets = trainer.prepare_batch(next(trainer._epoch_batches(0, 0)))
    assert images.shape == (2, 3, 64, 64) and images.device == trainer.device
    assert len(targets) == 2 and {"boxes", "labels"} <= set(targets[0])


def test_default_learning_rate_follows_the_reference_scaling():
    assert TrainConfig(batch_size=64).base_lr() == pytest.approx(0.08)
    assert TrainConfig(batch_size=16).base_lr() == pytest.approx(0.02)
    # the global batch:
    assert TrainConfig(batch_size=16).base_lr(world_size=4) == pytest.approx(0.08)
    assert TrainConfig(batch_size=16, lr=0.5).base_lr(world_size=4) == 0.5


@pytest.mark.slow
def test_resumed_run_reaches_the_same_weights(data_root, tmp_path):
    straight = make_trainer(data_root, tmp_path / "a")
    straight.fit(max_steps=4)  # 8 images, batch 2: the resume below lands mid-epoch
    half = make_trainer(data_root, tmp_path / "b")
    half.fit(max_steps=3)
    resumed = make_trainer(data_root, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / "last.pth")
    assert resumed.step == 3
    resumed.fit(max_steps=4)
    for name, a in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], a, rtol=1e-4, atol=1e-5,
                                   msg=name)
    for name, a in straight.ema.module.state_dict().items():
        torch.testing.assert_close(resumed.ema.module.state_dict()[name], a, rtol=1e-4, atol=1e-5,
                                   msg=name)
    lines = [json.loads(line)
             for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 5))
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in lines)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, checkpoint_every=1)
    real = trainer.compute_loss

    def poisoned(images, targets):
        total, cls, box = real(images, targets)
        return (total * float("nan"), cls, box) if trainer.step == 2 else (total, cls, box)

    trainer.compute_loss = poisoned
    good = tmp_path / "last.pth"
    with pytest.raises(FloatingPointError, match=rf"last good checkpoint is {good} \(step 2\)"):
        trainer.fit(max_steps=4)
    state = torch.load(good, weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    atomic_save({"x": torch.ones(2)}, tmp_path / "c.pth")
    atomic_save({"x": torch.zeros(2)}, tmp_path / "c.pth")
    assert os.listdir(tmp_path) == ["c.pth"]
    assert torch.load(tmp_path / "c.pth")["x"].sum() == 0


def test_empty_training_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        Trainer(tiny_model(), [], TrainConfig(), tmp_path)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_data_parallel_on_cpu_with_two_processes(data_root, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(worker), str(data_root), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pth")
    rank1 = torch.load(tmp_path / "rank1.pth")
    params = {n for n, _ in tiny_model().named_parameters()}
    for name in params:  # DDP keeps the weights identical (BN statistics stay per process)
        torch.testing.assert_close(rank0[name], rank1[name], msg=name)
    assert torch.load(tmp_path / "last.pth", weights_only=False)["step"] == 2


def test_adamw_and_bad_config_values():
    assert TrainConfig(optimizer="adamw").base_lr() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="time_budget_minutes"):
        TrainConfig(time_budget_minutes=0)
    with pytest.raises(ValueError, match="clock"):
        TrainConfig(clock="cpu")


def test_adamw_trainer_uses_adamw_with_decay_on_weights_only(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, optimizer="adamw")
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [4e-5, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("clock_name", ["wall", "process"])
def test_time_budget_stops_training_and_drives_the_schedule(data_root, tmp_path, monkeypatch,
                                                            clock_name):
    import types

    import effnet_tutorial.train as train_module

    ticks = iter(range(10_000))  # a fake clock: every reading is one second after the last

    def fake() -> float:
        return float(next(ticks))

    def unused() -> float:
        raise AssertionError("the other clock was read")

    clocks = {"perf_counter": fake, "process_time": unused} if clock_name == "wall" else \
        {"perf_counter": unused, "process_time": fake}
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(**clocks))
    # 15 fake seconds:
    trainer = make_trainer(data_root, tmp_path, time_budget_minutes=0.25, clock=clock_name)
    evals = []
    trainer.fit(eval_every_minutes=0.05,
                on_eval=lambda t: evals.append(t.train_seconds) or {"AP": 0.5})
    assert trainer.budget_spent() and 15 <= trainer.train_seconds < 17
    assert trainer.step > trainer.warmup_steps
    assert trainer.current_lr() == pytest.approx(0.0, abs=1e-12)  # the cosine has run its course
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r.get("event") == "eval"]
    assert len(logged) == len(evals) >= 4 and all(r["AP"] == 0.5 for r in logged)
    assert [r["train_time"] for r in logged] == sorted(r["train_time"] for r in logged)
    state = torch.load(tmp_path / "last.pth", weights_only=False)
    assert state["train_seconds"] == pytest.approx(trainer.train_seconds)


def test_eval_callback_needs_its_interval(data_root, tmp_path):
    with pytest.raises(ValueError, match="eval_every_minutes"):
        make_trainer(data_root, tmp_path).fit(on_eval=lambda t: {})
