"""A run's cost before it runs: counted multiply-adds and the time at a stated speed."""
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.estimates import TRAINING_PASSES, estimate_run


def test_estimate_counts_three_passes_per_image_and_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1))
    macs = 8 * 3 * 9 * 32 * 32  # output channels x input channels x kernel x output pixels
    run = estimate_run(model, 32, batch_size=4, steps=10)
    assert run.macs_per_image == et.count_flops(model, 32) == macs
    assert run.macs_per_step == TRAINING_PASSES * 4 * macs
    assert run.total_flops == 2 * TRAINING_PASSES * 4 * macs * 10
    assert run.minutes_at(1e-6) == pytest.approx(run.total_flops / 1e6 / 60)


def test_estimate_refuses_a_speed_that_is_not_positive_and_empty_runs():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1))
    with pytest.raises(ValueError, match="tflops"):
        estimate_run(model, 8, 2, 1).minutes_at(0)
    with pytest.raises(ValueError, match="batch_size and steps"):
        estimate_run(model, 8, 2, 0)


def test_d0_step_at_the_gpu_setting():
    coco = estimate_run(et.create_model("efficientdet_d0"), 512, 16, 7500)
    shapes = estimate_run(et.create_model("efficientdet_d0", num_classes=4), 512, 16, 7500)
    # D0 for COCO's 90 classes counts 2.5 G multiply-adds per 512 px image (the paper's 2.5B,
    # Chapter 12); the class head for 4 classes is smaller
    assert 2.4e9 < coco.macs_per_image < 2.6e9
    assert 2.1e9 < shapes.macs_per_image < coco.macs_per_image
