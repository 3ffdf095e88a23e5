"""The command line end to end on a tiny synthetic dataset (shapes -> train -> resume -> evaluate
-> predict), and every mistake it must explain before it starts working."""
import json
import os
import subprocess
import sys

import pytest

from effnet_tutorial.cli import main

pytest.importorskip("pycocotools")


@pytest.mark.slow
def test_every_subcommand_has_help():
    for command in ("shapes", "train", "evaluate", "predict"):
        out = subprocess.run([sys.executable, "-m", "effnet_tutorial", command, "--help"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout


@pytest.mark.slow
def test_shapes_train_resume_evaluate_predict(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["shapes", "--out", str(data), "--train", "8", "--val", "4", "--size", "64"]) == 0
    common = ["train", "--data", str(data), "--output", str(run), "--image-size", "64",
              "--batch-size", "4", "--workers", "0", "--lr", "0.01"]
    assert main(common + ["--epochs", "1"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and "AP" in records[-1]
    assert (run / "curves.png").is_file() and (run / "last.pth").is_file()
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run / "last.pth"), "--data", str(data),
                 "--image-size", "64", "--results", str(tmp_path / "res.json")]) == 0
    assert "AP50" in capsys.readouterr().out
    image = next((data / "images" / "val").iterdir())
    assert main(["predict", str(image), "--checkpoint", str(run / "last.pth"), "--image-size", "64",
                 "--output", str(tmp_path / "pred"), "--score-threshold", "0.0"]) == 0
    assert json.loads((tmp_path / "pred" / "detections.json").read_text())[0]["image"] == str(image)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "no split 'train'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing created by a command that did not start


@pytest.mark.slow
def test_train_with_adamw_for_a_time_budget(tmp_path):
    import torch

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["shapes", "--out", str(data), "--train", "4", "--val", "2", "--size", "64"]) == 0
    assert main(["train", "--data", str(data), "--output", str(run), "--image-size", "64",
                 "--batch-size", "2", "--workers", "0", "--optimizer", "adamw", "--minutes", "0.02",
                 "--val-split", ""]) == 0
    state = torch.load(run / "last.pth", weights_only=False)
    assert state["config"]["optimizer"] == "adamw"
    assert state["config"]["time_budget_minutes"] == 0.02
    assert state["train_seconds"] >= 1.2 and state["step"] >= 1


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 training and 4 validation images of 64 pixels."""
    from .helpers import write_tiny_shapes

    return write_tiny_shapes(tmp_path_factory.mktemp("data"), 8, 4, seed=0)


def tiny_run(data, output, *extra):
    """The arguments of a two-step training run at 64 pixels without evaluation."""
    return ["train", "--data", str(data), "--output", str(output), "--image-size", "64",
            "--batch-size", "4", "--workers", "0", "--lr", "0.01", "--epochs", "1",
            "--val-split", "", *map(str, extra)]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The output folder of a finished two-step run."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(tiny_run(data, run)) == 0
    return run


# ----------------------------------------------------------------------------- the output folder
def test_a_folder_that_holds_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert main(tiny_run(tmp_path / "no-data", run)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(run) in err and "--resume" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'  # untouched
    assert main(tiny_run(tmp_path, run, "--resume", "--overwrite")) == 2
    assert "one of them" in capsys.readouterr().err


@pytest.mark.slow
def test_overwrite_starts_afresh_and_removes_only_the_runs_files(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 99, "loss": 2.0}\n')
    (run / "last.pth").write_text("an earlier run")
    (run / "notes.txt").write_text("mine")
    assert main(tiny_run(data, run, "--overwrite")) == 0
    assert (run / "notes.txt").read_text() == "mine"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2]


# ----------------------------------------------------------------------------- flag values
@pytest.mark.parametrize("command, flag, value", [
    ("train", "--epochs", "inf"), ("train", "--log-every", "0"), ("train", "--image-size", "-64"),
    ("train", "--batch-size", "1"), ("train", "--lr", "nan"), ("train", "--workers", "-1"),
    ("train", "--minutes", "0"), ("train", "--checkpoint-every", "1.5"),
    ("evaluate", "--batch-size", "-1"), ("predict", "--score-threshold", "2"),
])
def test_a_bad_flag_value_stops_before_anything(tmp_path, capsys, command, flag, value):
    out = tmp_path / "out"
    args = {"train": tiny_run(tmp_path, out),
            "evaluate": ["evaluate", "--checkpoint", "x.pth", "--data", str(tmp_path)],
            "predict": ["predict", "x.png", "--checkpoint", "x.pth", "--output", str(out)]}[command]
    with pytest.raises(SystemExit) as exit_:
        main(args + [flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"error: argument {flag}" in err and value in err
    assert not out.exists()


def test_a_classifier_as_model_is_explained(tmp_path, capsys):
    assert main(tiny_run(tmp_path, tmp_path / "out", "--model", "efficientnet_b0")) == 2
    err = capsys.readouterr().err
    assert "'efficientnet_b0' is an image classifier" in err and "tf_efficientdet_d0" in err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_an_error(data, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(tiny_run(data, tmp_path / "a_file" / "run")) == 2
    assert "cannot write in the output folder" in capsys.readouterr().err


def test_a_folder_in_use_by_another_training_is_refused(data, tmp_path, capsys):
    import socket

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    assert main(tiny_run(data, run)) == 2
    err = capsys.readouterr().err
    assert f"{run} is in use" in err and f"process {os.getppid()}" in err
    assert not (run / "last.pth").exists()


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("content, message", [
    (b"epoch 3: loss 0.4\n", "is a text file"),
    (b"PK\x03\x04 cut off", "is truncated or corrupted"),
])
def test_evaluate_and_predict_name_a_bad_checkpoint(data, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    image = next((data / "images" / "val").iterdir())
    for args in (["evaluate", "--data", str(data)],
                 ["predict", str(image), "--output", str(tmp_path / "pred")]):
        assert main(args + ["--checkpoint", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"error: {bad} {message}" in err and "Traceback" not in err
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_evaluate_and_predict_take_model_size_and_names_from_the_checkpoint(data, trained,
                                                                            tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(trained / "model.pth"), "--data", str(data)]) == 0
    assert "tf_efficientdet_d0 at 64x64 pixels" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(trained / "last.pth"), "--data", str(data),
                 "--model", "tf_efficientdet_d1"]) == 2
    assert "tf_efficientdet_d1 was asked for" in capsys.readouterr().err
    pred = tmp_path / "pred"
    assert main(["predict", str(data / "images" / "val"), "--checkpoint", str(trained / "last.pth"),
                 "--output", str(pred), "--score-threshold", "0"]) == 0
    records = json.loads((pred / "detections.json").read_text())
    assert len(records) == 4 and len(list(pred.glob("*_detections.png"))) == 4
    assert set(records[0]["names"]) <= {"circle", "square", "triangle", "cross"}


def test_predict_refuses_what_is_not_an_image(data, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "notes.txt", "cannot read"),
                          (tmp_path / "empty", "folder without images"),
                          (tmp_path / "missing.png", "image not found")):
        assert main(["predict", str(path), "--checkpoint", "x.pth",
                     "--output", str(tmp_path / "pred")]) == 2
        assert f"error: {message}" in capsys.readouterr().err.replace(f"{path} is a ", "")
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_resume_with_another_batch_size_or_model_is_refused(data, trained, capsys):
    assert main(tiny_run(data, trained, "--resume", "--batch-size", "2")) == 2
    err = capsys.readouterr().err
    assert "batch: checkpoint 4" in err and "step count" in err
    assert main(tiny_run(data, trained, "--resume", "--model", "efficientdet_d0")) == 2
    err = capsys.readouterr().err
    assert "model: checkpoint tf_efficientdet_d0, this run efficientdet_d0" in err


# ----------------------------------------------------------------------------- same run
@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights(data, tmp_path):
    import torch

    for name in ("a", "b"):
        assert main(tiny_run(data, tmp_path / name, "--seed", "0")) == 0
    a, b = (torch.load(tmp_path / name / "last.pth", weights_only=True)["model"]
            for name in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_recipe_cpu_starts_from_the_books_cpu_run(data, tmp_path):
    import torch

    from effnet_tutorial.recipes import CPU_SHAPES

    run = tmp_path / "run"
    assert main(["train", "--recipe", "cpu", "--data", str(data), "--output", str(run),
                 "--image-size", "64", "--batch-size", "2", "--minutes", "0.005",
                 "--val-split", ""]) == 0
    meta = torch.load(run / "last.pth", weights_only=True)["meta"]
    config = meta["train_config"]
    assert (meta["model"], meta["image_size"], config["batch_size"]) == ("efficientdet_d0", 64, 2)
    assert (config["optimizer"], config["lr"]) == ("adamw", CPU_SHAPES.lr)
    assert config["clock"] == "process"
    assert config["warmup_epochs"] == CPU_SHAPES.warmup_epochs and config["num_workers"] == 0
    assert meta["run_info"]["jitter"] == list(CPU_SHAPES.jitter)


# ----------------------------------------------------------------------------- help and plots
def test_help_shows_defaults_without_markup(capsys):
    for args in ([], ["train"], ["evaluate"]):
        with pytest.raises(SystemExit):
            main(args + ["--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text
        if args == ["train"]:
            assert "--recipe cpu: 8" in text and "(default: paper)" in text
            assert "last.pth (model, EMA, optimiser" in text
        if args == ["evaluate"]:
            assert "(default: 8)" in text and "the checkpoint's" in text


def test_a_short_runs_curves_have_markers():
    import matplotlib

    matplotlib.use("Agg")
    from effnet_tutorial.viz import plot_metrics

    ax = plot_metrics([{"step": 2, "loss": 3.0, "cls_loss": 2.0}])
    assert all(line.get_marker() not in (None, "None", "") for line in ax.get_lines())


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_trained_on_other_classes(data, trained, tmp_path, capsys):
    import torch

    state = torch.load(trained / "model.pth", weights_only=True)
    state["meta"]["class_names"] = ["cat", "dog", "bird", "fish"]
    torch.save(state, tmp_path / "other.pth")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "other.pth"), "--data", str(data)]) == 2
    assert "predicts the classes cat, dog, bird, fish" in capsys.readouterr().err


def test_shapes_refuses_to_write_over_a_dataset(tmp_path, capsys):
    args = ["shapes", "--out", str(tmp_path), "--train", "2", "--val", "1", "--size", "32"]
    assert main(args) == 0
    before = (tmp_path / "annotations" / "instances_train.json").read_text()
    assert main(args[:-1] + ["48"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "annotations" / "instances_train.json").read_text() == before
    assert main(args + ["--overwrite"]) == 0
