"""What a training run will cost before it runs: multiply-adds per step, and time at a stated speed.

A reader about to train on a GPU the book was never run on (a Colab T4) deserves a number to
expect, and the number must say what it rests on. The multiply-adds are counted from the model
(:func:`~effnet_tutorial.counting.count_flops`); the speed is an *assumption* the caller states,
in effective tera-FLOP/s (two FLOPs per multiply-add), and the result is an estimate until a run
on that hardware measures it.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .counting import count_flops

#: A training step costs about three forward passes, the forward pass and a backward pass that
#: computes gradients with respect to both the activations and the weights (two products of the
#: same size per layer), the usual rule of thumb for convolutions and linear layers.
TRAINING_PASSES = 3

#: NVIDIA T4 peak throughput from its datasheet (``nvidia2019t4``), in tera-FLOP/s.
T4_PEAK_TFLOPS = {"FP32": 8.1, "FP16 tensor cores (mixed precision)": 65.0}


@dataclass(frozen=True)
class RunEstimate:
    """The cost of a run of ``steps`` steps of ``batch_size`` images at ``image_size`` pixels."""

    macs_per_image: int  # forward multiply-adds of one image
    batch_size: int
    steps: int

    @property
    def macs_per_step(self) -> int:
        """Multiply-adds of one training step (forward and backward, the whole batch)."""
        return TRAINING_PASSES * self.macs_per_image * self.batch_size

    @property
    def total_flops(self) -> float:
        """FLOPs of the whole run (two per multiply-add)."""
        return 2.0 * self.macs_per_step * self.steps

    def minutes_at(self, tflops: float) -> float:
        """Minutes the run takes at ``tflops`` effective tera-FLOP/s (an assumption, not a peak).

        Real runs reach a fraction of a chip's peak; EfficientDet's depthwise convolutions and
        element-wise layers are memory-bound, so the fraction is low, and data loading can bound
        the step as well. State the assumption beside the result.
        """
        if not tflops > 0:
            raise ValueError(f"tflops must be positive, got {tflops!r}")
        return self.total_flops / (tflops * 1e12) / 60.0


def estimate_run(model: torch.nn.Module, image_size: int, batch_size: int, steps: int) -> RunEstimate:
    """Count ``model``'s forward multiply-adds at ``image_size`` and describe a run of ``steps``."""
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size} and {steps}")
    return RunEstimate(count_flops(model, image_size), batch_size, steps)
