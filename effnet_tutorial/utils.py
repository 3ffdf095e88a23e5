"""Small helpers every chapter uses: the device, the environment line, the CI switch, a timer,
and ``glue`` for numbers the text quotes.

In the book: Chapter 1, *Introduction: from a depthwise convolution to EfficientDet*.
"""
from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

#: Name of the environment variable that shrinks long work (searches, training) for CI, set as ``BOOK_SMOKE=1``.
SMOKE_ENV = "BOOK_SMOKE"


def smoke_run() -> bool:
    """True when ``BOOK_SMOKE`` is set to a true value: notebooks then shrink their long work.

    The default (unset) is the real run a reader sees; CI sets ``BOOK_SMOKE=1``.
    """
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for a ``with`` block, then back in the mode it was in.

    Batch norm then uses its running statistics and dropout is off; a model that was training
    is training again afterwards, even if the block raised.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def try_gpu() -> torch.device:
    """The first CUDA device if there is one, else the CPU (d2l's ``try_gpu``)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def environment_line() -> str:
    """One line saying what a notebook ran on: package, torch, device and Python versions."""
    from . import __version__

    device = try_gpu()
    threads = torch.get_num_threads()
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {threads} thread{'s' if threads != 1 else ''}")
    return (f"effnet_tutorial {__version__} | torch {torch.__version__} | device: {device} ({name}) | "
            f"Python {platform.python_version()}")


#: The MIME-type prefix under which myst-nb stores a glued value that is not displayed.
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value: Any, display: bool = True) -> None:
    """Store ``value`` in the notebook's output under ``name``, for the book's ``{glue}`` roles.

    The book quotes computed numbers in its prose through myst-nb's ``glue``. When myst-nb is
    installed (the book's build environment) this *is* ``myst_nb.glue``. Without it (Colab, or a
    reader's own Jupyter) the same output is written: the value's display formats with the
    ``scrapbook`` metadata myst-nb reads, shown when ``display`` is true and stored under
    :data:`~effnet_tutorial.utils.GLUE_PREFIX` otherwise. Outside IPython it prints the value
    when ``display`` is true.
    So a chapter never needs the book-building tools to run.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, value, display)
        return
    try:
        from IPython import get_ipython
        from IPython.core.formatters import format_display_data
        from IPython.display import display as ipy_display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        if display:
            print(value)
        return
    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)


def time_it(fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` runs.

    ``clock`` is wall-clock time by default; ``time.thread_time`` measures this thread's CPU
    time instead, which other processes on a busy machine do not inflate (for single-threaded
    work). Synchronises CUDA around each run so GPU timings are real.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = clock()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(clock() - start)
    times.sort()
    return times[len(times) // 2]
