"""The command line end to end on a tiny synthetic dataset: shapes -> train -> resume -> evaluate -> predict."""
import json
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


def test_train_with_adamw_for_a_time_budget(tmp_path):
    import torch

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["shapes", "--out", str(data), "--train", "4", "--val", "2", "--size", "64"]) == 0
    assert main(["train", "--data", str(data), "--output", str(run), "--image-size", "64",
                 "--batch-size", "2", "--workers", "0", "--optimizer", "adamw", "--minutes", "0.02",
                 "--val-split", ""]) == 0
    state = torch.load(run / "last.pth", weights_only=False)
    assert state["config"]["optimizer"] == "adamw" and state["config"]["time_budget_minutes"] == 0.02
    assert state["train_seconds"] >= 1.2 and state["step"] >= 1
