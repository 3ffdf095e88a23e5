"""The training benchmark script runs end to end on a tiny setting (no timing is asserted)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_d0_cpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_d0_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_benchmark_writes_both_curves(tmp_path):
    script = load_script()
    argv = ["--minutes", "0.02", "--eval-every", "0.01", "--train-images", "4", "--val-images", "2",
            "--sequential", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["curves"]) == {"ours", "effdet"}
    for curve in summary["curves"].values():
        assert curve["steps"] >= 1 and curve["minutes"][0] == 0.0
        assert len(curve["minutes"]) == len(curve["AP"]) >= 2  # the untrained network, then at least one more
        assert 0.0 <= curve["final"]["AP"] <= 1.0
    assert summary["recipe"]["train_images"] == 4 and (tmp_path / "ap_vs_time.png").stat().st_size > 0
