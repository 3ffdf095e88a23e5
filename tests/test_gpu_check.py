"""The GPU check: refuses to run silently on a CPU, judges the loss, measures memory exactly."""
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.benchmark import load_record
from effnet_tutorial.benchmark.memory import state_mb, training_step_memory
from effnet_tutorial.train import TrainConfig, Trainer

from .helpers import load_benchmark_script


def load_script():
    return load_benchmark_script("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_with_status_2_unless_told_cpu(capsys):
    assert load_script().main([]) == 2
    assert "pass --cpu" in capsys.readouterr().err


def test_loss_falls_compares_the_first_and_last_fifth():
    falls = load_script().loss_falls
    assert falls([5, 5, 4, 3, 2, 2, 1, 1, 1, 1]) == (5.0, 1.0, True)
    assert falls([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])[2] is False
    assert falls([2.0])[2] is False  # one point: nothing fell


def test_too_few_steps_is_an_error():
    with pytest.raises(SystemExit):
        load_script().parse(["--steps", "5"])


def tiny_trainer(tmp_path, optimizer="adamw"):
    model = et.create_model("efficientdet_d0", num_classes=2, image_size=128)
    data = [(torch.rand(3, 128, 128) * 255, {"boxes": torch.tensor([[10.0, 10, 60, 60]]),
                                              "labels": torch.tensor([1])}) for _ in range(2)]
    config = TrainConfig(batch_size=2, optimizer=optimizer, progress=False, num_workers=0)
    return Trainer(model, data, config, tmp_path), data


def test_state_is_weights_gradients_moments_and_the_ema(tmp_path):
    trainer, data = tiny_trainer(tmp_path)
    images = torch.stack([d[0] for d in data])
    memory = training_step_memory(trainer, images, [d[1] for d in data])
    n = sum(p.numel() for p in trainer.model.parameters())
    buffers = sum(b.numel() for b in trainer.model.buffers() if b.is_floating_point())
    ints = sum(b.numel() for b in trainer.model.buffers() if not b.is_floating_point())
    steps = 4 * len(list(trainer.model.parameters()))  # AdamW's float32 step count per tensor
    # weights, gradients and two moments in float32; the EMA's weights and buffers
    expected = (4 * n * 4 + steps + n * 4 + buffers * 4 + ints * 8) / 2**20
    assert memory["state_mb"] == pytest.approx(expected) == state_mb(trainer)
    assert memory["step_peak_mb"] > 0 and memory["total_mb"] > memory["state_mb"]


def test_the_shipped_cpu_record_is_the_gpu_setting_and_its_loss_fell():
    from effnet_tutorial.recipes import GPU_SHAPES

    record = load_record("gpu_setting_cpu")
    assert record["recipe"]["image_size"] == GPU_SHAPES.image_size
    assert record["recipe"]["batch_size"] == GPU_SHAPES.batch_size
    assert record["recipe"]["min_size"] == GPU_SHAPES.min_size
    assert record["loss_falls"] and record["loss_last_fifth"] < record["loss_first_fifth"]
    assert record["steps"] >= 100 and record["memory"]["step_peak_mb"] > 0
