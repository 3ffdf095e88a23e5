"""Everything in the package that is there for speed, apart from the code the chapters teach.

Two kinds of fast code live here, so that the concept modules hold only the textbook versions:

* **Kernels the package uses by default** (:mod:`effnet_tutorial.fast.kernels`): the in-place
  IoU of anchor matching, the one-pass focal-loss sum and the two-stage top-k of CPU
  post-processing. Each concept module (``anchors``, ``losses``, ``postprocess``) holds the
  readable version the chapter shows and calls the kernel instead only while :func:`enabled`
  is true. Tests hold every kernel equal to its textbook twin; ``python -m
  effnet_tutorial.benchmark`` measures what each buys. :func:`enabled` also lets
  ``batched_nms(backend="auto")`` pick torchvision's C++ NMS when it is installed.
* **Model transforms you apply yourself** (:mod:`effnet_tutorial.fast.transforms`, re-exported
  here): conv+BN folding, a memory-efficient swish, channels-last, ``torch.compile``, AMP.

**The switch.** Fast kernels are on by default; turn them off to run exactly the code the book
prints, for the whole process with the environment variable ``EFFNET_TUTORIAL_FAST=0`` (read at
import), or in code::

    from effnet_tutorial import fast
    fast.set_enabled(False)          # from now on
    with fast.using(False):          # or only inside a block
        loss = et.detection_loss(...)

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from . import kernels
from .transforms import (
    MemoryEfficientSwish, autocast, fold_bn_into_conv, fuse_conv_bn, maybe_compile,
    memory_efficient_swish, optimize_for_inference, to_channels_last, use_memory_efficient_swish,
)

#: The environment variable that turns the fast kernels off for a whole process (``0``).
FAST_ENV = "EFFNET_TUTORIAL_FAST"

_enabled = os.environ.get(FAST_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def enabled() -> bool:
    """Whether the concept modules call the fast kernels (default) or their textbook versions."""
    return _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the fast kernels on or off for the whole process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


@contextlib.contextmanager
def using(flag: bool) -> Iterator[None]:
    """Run a ``with`` block with the fast kernels on (``True``) or off, then restore the setting."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


__all__ = ["FAST_ENV", "MemoryEfficientSwish", "autocast", "enabled", "fold_bn_into_conv",
           "fuse_conv_bn", "kernels", "maybe_compile", "memory_efficient_swish",
           "optimize_for_inference", "set_enabled", "to_channels_last",
           "use_memory_efficient_swish", "using"]
