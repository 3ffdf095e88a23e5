"""Small helpers every chapter uses: the device, the environment line, the CI switch, two timers
(``time_it`` for one function, ``time_alternating`` for a fair comparison of several, with the
spread), and ``glue`` for numbers the text quotes.

In the book: Chapter 1, *Introduction: from a depthwise convolution to EfficientDet*.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one function: the median and quartiles of its timed runs, and the runs
    themselves in the order they were taken (one per round of :func:`time_alternating`)."""

    median: float
    q1: float
    q3: float
    runs: tuple[float, ...]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile (linear interpolation, as numpy's default)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


#: Size of the buffer :func:`settle_allocator` allocates and frees: just under glibc's largest
#: dynamic mmap threshold on 64-bit machines (32 MiB), so the threshold rises as far as it can.
SETTLE_BYTES = 30 * 2**20


def settle_allocator(nbytes: int = SETTLE_BYTES) -> None:
    """Allocate and free one large CPU buffer, so that later timings do not pay for fresh pages.

    glibc's ``malloc`` serves every request above its *mmap threshold* (128 KiB at start) with
    pages mapped fresh from the operating system and unmapped again on ``free``: a kernel that
    allocates scratch buffers on each call (oneDNN's layout copies do) then pays for page faults
    on every call, which can cost a memory-bound kernel many times its own work. When a buffer
    above the threshold is freed, glibc raises the threshold to that buffer's size (up to 32 MiB)
    and keeps smaller buffers in its heap from then on. Freeing one buffer of ``nbytes`` once
    puts the process in that steady state; elsewhere (other C libraries) it costs one allocation.
    """
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    buffer[:: 4096] = 0  # touch the pages, so the buffer is really mapped
    del buffer


def time_alternating(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 11,
    warmup: int = 2,
    threads: int | None = 1,
    clock: Callable[[], float] = time.thread_time,
    settle: bool = True,
) -> dict[str, Timing]:
    """Time several functions fairly: median and quartiles of each, over alternating rounds.

    Each round calls every function once, in the given order on even rounds and in reverse on odd
    ones, so a change of machine speed during the measurement (another program starting, the CPU
    clocking down) touches all of them alike, and round ``i`` of one function can be set against
    round ``i`` of another (:func:`ratio_quartiles`). ``threads`` sets ``torch.set_num_threads``
    for the measurement and restores it afterwards (``None`` leaves it alone). The default clock,
    ``time.thread_time``, is the CPU time of this thread: other programs on a busy machine do not
    inflate it, but it sees only this thread's work, so it needs ``threads=1``. With a wall clock
    (``time.perf_counter``) CUDA is synchronised around each call. ``settle`` first calls
    :func:`settle_allocator`, so that what is measured is the functions, not the allocator's
    history (``settle=False`` shows the difference, once per process).
    """
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 for quartiles, got {repeats}")
    if clock is time.thread_time and threads != 1:
        raise ValueError("time.thread_time counts one thread only: use threads=1 or a wall clock")
    names = list(fns)
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = clock is not time.thread_time and torch.cuda.is_available()
    runs: dict[str, list[float]] = {name: [] for name in names}
    if settle:
        settle_allocator()
    try:
        for _ in range(warmup):
            for name in names:
                fns[name]()
        for i in range(repeats):
            for name in (names if i % 2 == 0 else names[::-1]):
                if sync:
                    torch.cuda.synchronize()
                start = clock()
                fns[name]()
                if sync:
                    torch.cuda.synchronize()
                runs[name].append(clock() - start)
    finally:
        torch.set_num_threads(saved)
    result = {}
    for name, values in runs.items():
        q1, med, q3 = _quartiles(values)
        result[name] = Timing(med, q1, q3, tuple(values))
    return result


def ratio_quartiles(a: Timing, b: Timing) -> tuple[float, float, float]:
    """Quartiles (lower, median, upper) of ``a / b`` round by round, for two :class:`Timing` of
    the same :func:`time_alternating` call: the spread a speedup should be quoted with."""
    if len(a.runs) != len(b.runs):
        raise ValueError("the two timings come from different measurements")
    return _quartiles([x / y for x, y in zip(a.runs, b.runs)])
