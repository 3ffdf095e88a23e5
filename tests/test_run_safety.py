"""A run loses nothing and saves nothing wrong: the output-folder lock, only finite weights saved,
the folder checked before training, failed saves cleaned up, resumes checked and their redone
steps logged once, and a run killed with SIGKILL resumed from the command line."""
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from effnet_tutorial import create_model
from effnet_tutorial.checkpoints import CheckpointError
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.transforms import train_transforms
from effnet_tutorial.runs import RunLock
from effnet_tutorial.train import SeededAugmentation, TrainConfig, Trainer

from .helpers import write_tiny_shapes


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_shapes(tmp_path_factory.mktemp("shapes"), 8, 2, seed=1)


def make_trainer(data_root, out, num_classes=None, **overrides):
    raw = CocoDetection(data_root / "images" / "train",
                        data_root / "annotations" / "instances_train.json")
    train_set = SeededAugmentation(raw, train_transforms(64, (0.5, 1.5)), seed=0)
    settings = dict(epochs=2, batch_size=2, lr=0.01, num_workers=0, progress=False, log_every=1,
                    checkpoint_every=1000)
    config = TrainConfig(**{**settings, **overrides})
    torch.manual_seed(0)
    model = create_model("tf_efficientdet_d0", num_classes=num_classes or raw.num_classes,
                         fpn_channels=16, fpn_repeats=1, head_repeats=1, image_size=64)
    return Trainer(model, train_set, config, out)


def write_lock(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RunLock.NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                   "started": "earlier"}))


def steps_in(path):
    return [r["step"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


# ----------------------------------------------------------------------------- the lock
def test_a_second_run_into_the_same_folder_fails_at_once(data_root, tmp_path):
    other = os.getppid()  # a live process that is not this one
    write_lock(tmp_path, other)
    trainer = make_trainer(data_root, tmp_path)
    with pytest.raises(FileExistsError, match=f"{tmp_path}.*in use.*process {other}"):
        trainer.fit(max_steps=1)
    assert trainer.step == 0 and not (tmp_path / "last.pth").exists()
    assert json.loads((tmp_path / RunLock.NAME).read_text())["pid"] == other  # left alone


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over_and_released(data_root, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(tmp_path, gone.pid)
    (tmp_path / "last.pth").write_bytes(b"an earlier run's file")  # the API writes over it
    trainer = make_trainer(data_root, tmp_path)
    with pytest.warns(UserWarning, match=f"process {gone.pid}, which no longer runs"):
        trainer.fit(max_steps=1)
    assert trainer.step == 1 and not (tmp_path / RunLock.NAME).exists()
    with RunLock(tmp_path), RunLock(tmp_path):  # re-entrant in one process
        assert (tmp_path / RunLock.NAME).exists()
    assert not (tmp_path / RunLock.NAME).exists()


# ----------------------------------------------------------------------------- finite weights
@pytest.mark.parametrize("field, value", [
    ("lr", math.nan), ("lr", 0.0), ("lr", -0.1), ("lr", math.inf), ("epochs", math.inf),
    ("epochs", math.nan), ("log_every", 0), ("checkpoint_every", 0), ("batch_size", 1),
    ("ema_decay", 1.0), ("momentum", 1.5), ("warmup_epochs", -1.0), ("num_workers", -1),
    ("time_budget_minutes", math.inf), ("clip_grad_norm", 0.0), ("min_lr", math.nan),
])
def test_config_refuses_values_that_would_fail_later(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.slow
def test_weights_that_turn_nan_are_never_saved(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, checkpoint_every=1)
    step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):
        step(*args, **kwargs)
        if trainer.step == 1:  # the second step
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.nan)

    trainer.optimizer.step = poisoned_step
    with pytest.raises(FloatingPointError,
                       match=rf"NaN or infinite at step 2.*{tmp_path / 'last.pth'} \(step 1\)"):
        trainer.fit(max_steps=4)
    for name in ("last.pth", "model.pth"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values()), name
    assert torch.load(tmp_path / "last.pth", weights_only=True)["step"] == 1
    assert not (tmp_path / RunLock.NAME).exists()  # released on the error


def test_with_no_checkpoint_yet_the_message_says_none_is_good(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path)
    step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(math.nan)

    trainer.optimizer.step = poisoned_step
    with pytest.raises(FloatingPointError, match="none is good"):
        trainer.fit(max_steps=4)
    assert not (tmp_path / "last.pth").exists()


def test_non_finite_gradients_stop_before_the_weights_change(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path)
    weight = next(trainer.model.parameters())
    before = weight.detach().clone()
    weight.register_hook(lambda grad: grad * math.inf)
    with pytest.raises(FloatingPointError, match="gradients became"):
        trainer.fit(max_steps=1)
    assert torch.equal(weight.detach(), before)


# ----------------------------------------------------------------------------- the disk
def test_an_unwritable_output_folder_is_found_before_training(data_root, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    trainer = make_trainer(data_root, tmp_path / "a_file" / "run")
    with pytest.raises(OSError, match="cannot write in the output folder"):
        trainer.fit(max_steps=1)
    assert trainer.step == 0


def test_too_little_free_space_is_found_before_training(data_root, tmp_path, monkeypatch):
    import shutil

    import effnet_tutorial.runs as runs_module

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(runs_module.shutil, "disk_usage",
                        lambda path: usage._replace(free=1_000_000))
    trainer = make_trainer(data_root, tmp_path)
    with pytest.raises(OSError, match="1 MB free.*need about"):
        trainer.fit(max_steps=1)
    assert trainer.step == 0


def test_a_full_disk_at_a_save_leaves_no_partial_file_and_says_so(data_root, tmp_path,
                                                                   monkeypatch):
    trainer = make_trainer(data_root, tmp_path, checkpoint_every=1)
    trainer.fit(max_steps=1)

    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'last.pth'} \(ENOSPC"):
        trainer.fit(max_steps=2)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / RunLock.NAME).exists()
    assert torch.load(tmp_path / "last.pth", weights_only=True)["step"] == 1  # unchanged


# ----------------------------------------------------------------------------- resuming
@pytest.mark.slow
def test_resume_moves_the_redone_steps_out_of_the_metrics(data_root, tmp_path):
    make_trainer(data_root, tmp_path).fit(max_steps=2)
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a") as f:  # what a run killed during step 3's line leaves
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    resumed = make_trainer(data_root, tmp_path)
    resumed.load_checkpoint(tmp_path / "last.pth")
    assert steps_in(metrics) == [1, 2]
    redone = (tmp_path / "metrics.redone.jsonl").read_text().splitlines()
    assert json.loads(redone[0])["step"] == 3 and redone[1] == '{"step": 4, "lo'
    resumed.fit(max_steps=4)
    assert steps_in(metrics) == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_refuses_another_batch_model_or_file(data_root, tmp_path):
    make_trainer(data_root, tmp_path).fit(max_steps=1)
    with pytest.raises(CheckpointError, match="batch: checkpoint 2 images.*this run 4.*step count"):
        make_trainer(data_root, tmp_path / "b", batch_size=4).load_checkpoint(
            tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="class count: checkpoint 4, this run 3"):
        make_trainer(data_root, tmp_path / "c", num_classes=3).load_checkpoint(
            tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        make_trainer(data_root, tmp_path / "d").load_checkpoint(tmp_path / "model.pth")


def test_a_training_set_of_one_image_is_refused(data_root, tmp_path):
    raw = CocoDetection(data_root / "images" / "train",
                        data_root / "annotations" / "instances_train.json")
    one = torch.utils.data.Subset(raw, [0])
    with pytest.raises(ValueError, match="batch norm"):
        Trainer(create_model("tf_efficientdet_d0", num_classes=4), one, TrainConfig(), tmp_path)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_the_command_line(data_root, tmp_path, capsys):
    from effnet_tutorial.cli import main

    run = tmp_path / "run"
    args = ["train", "--data", str(data_root), "--output", str(run), "--image-size", "64",
            "--batch-size", "2", "--workers", "0", "--lr", "0.01", "--epochs", "3",
            "--log-every", "1", "--checkpoint-every", "2", "--val-split", ""]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "effnet_tutorial", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if (run / "metrics.jsonl").exists() and len(steps_in(run / "metrics.jsonl")) >= 5:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (run / RunLock.NAME).exists()  # the killed run could not remove it
    saved = torch.load(run / "last.pth", weights_only=True)["step"]
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # refused without it
    assert main(args + ["--resume"]) == 0
    out, err = capsys.readouterr()
    assert f"at step {saved}" in out and "warning: took over the lock" in err
    assert steps_in(run / "metrics.jsonl") == list(range(1, 13))  # 4 steps x 3 epochs, once each
    assert torch.load(run / "last.pth", weights_only=True)["step"] == 12
    assert not (run / RunLock.NAME).exists()


def test_run_mismatches_explains_each_difference():
    from effnet_tutorial.runs import run_mismatches

    saved = {"model": "tf_efficientdet_d0", "model_options": {"aspect_ratios": ((1.0, 1.0),)},
             "num_classes": 4, "class_names": ["a", "b", "c", "d"], "image_size": 64,
             "batch_size": 4, "world_size": 1, "train_config": {"optimizer": "sgd"}}
    same = {**saved, "model_options": {"aspect_ratios": [[1.0, 1.0]]}}  # as loaded back
    assert run_mismatches(saved, same) == []
    other = {**saved, "class_names": ["a", "b", "c", "e"], "image_size": 128, "world_size": 2,
             "train_config": {"optimizer": "adamw"}}
    problems = " | ".join(run_mismatches(saved, other))
    assert "class names" in problems and "input size: checkpoint 64, this run 128" in problems
    assert "4 images x 1 process(es), this run 4 x 2" in problems and "optimizer" in problems
