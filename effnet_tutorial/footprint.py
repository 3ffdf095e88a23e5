"""What a network costs when it runs: activation memory (counted exactly) and latency (measured).

Multiply-adds and parameters (:mod:`~effnet_tutorial.counting`) say what a network computes and
stores; they do not say how long one image takes or how much memory its intermediate tensors
need. Two networks with the same multiply-adds can differ in both: depth adds layers that run
one after the other, resolution makes every feature map larger.

* :func:`activation_memory` counts the bytes of every tensor a forward pass creates, exactly.
  It watches every ATen operation (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`),
  adds the bytes of each new output (not views, not in-place results, not batch norm's saved
  statistics) to a running total, and subtracts them again when Python frees the tensor. The
  total is what one pass writes; the peak is the most that is alive at once, the memory that
  inference needs beyond the weights and the input. Both are the same in every run and on
  every device (they depend on shapes only), so they work on the meta device, in no time and no
  memory, and can be checked by hand on a tiny network.
* :func:`time_round_robin` times several networks in rounds, one run of each per round, the
  order reversed every other round, on one thread: a machine that slows down for a while slows
  all of them in the same rounds. :func:`paired_ratios` divides two networks' times round by
  round, and :func:`median_interval` gives a median with a distribution-free confidence
  interval (from order statistics), so that a difference is claimed only where intervals
  separate.

In the book: Chapter 7, *An explorer*.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .counting import InputSize, input_tensor
from .utils import evaluating

#: Batch-norm operations whose outputs after the first are saved statistics, not activations
#: (empty in eval mode on CPU, per-channel placeholders on other devices).
_BATCH_NORM_OPS = ("native_batch_norm", "_native_batch_norm_legit",
                   "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
                   "miopen_batch_norm")


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes of the tensors one forward pass creates (weights and the input not included)."""

    total_bytes: int  # everything the pass writes: every new output of every operation
    peak_bytes: int  # the most that is alive at one moment
    input_bytes: int  # the input batch, alive throughout (not in the two numbers above)
    tensors: int  # how many tensors were counted


class _Tracker(TorchDispatchMode):
    """Counts the new outputs of every ATen operation, and frees them when Python does."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.total = self.tensors = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        skip_extra = func.overloadpacket.__name__ in _BATCH_NORM_OPS
        for i, (ret, t) in enumerate(zip(func._schema.returns, outs)):
            if not isinstance(t, torch.Tensor) or ret.alias_info is not None:
                continue  # a view or an in-place result: no new memory
            if skip_extra and i > 0:
                continue
            nbytes = t.numel() * t.element_size()
            self.total += nbytes
            self.live += nbytes
            self.tensors += 1
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, nbytes)
        return out


def activation_memory(model: nn.Module, input_size: InputSize, batch_size: int = 1) -> ActivationMemory:
    """Total and peak bytes of the tensors created by one forward pass (eval mode, no gradients).

    ``input_size`` is as for :func:`~effnet_tutorial.counting.count_flops`. Build the model on
    the meta device (``with torch.device("meta"):``) to count a large network without memory.
    The result depends only on shapes and dtypes: it is exact and repeatable.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x = input_tensor(model, input_size)
    x = x.expand(batch_size, *x.shape[1:]).contiguous()
    tracker = _Tracker()
    with evaluating(model), torch.no_grad(), tracker:
        out = model(x)
        del out
    return ActivationMemory(tracker.total, tracker.peak, x.numel() * x.element_size(),
                            tracker.tensors)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (unchanged if ``None``), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_round_robin(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    threads: int | None = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each ``fns[name]()`` per round: ``rounds`` rounds of one call each, after
    ``warmup`` untimed rounds, the order reversed in every other round, on ``threads`` threads.

    One thread, because on a shared CPU several threads wait for each other at every barrier.
    Entry ``k`` of every list comes from the same round, so :func:`paired_ratios` can divide
    them pairwise and cancel the slow and fast phases of a busy machine.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds}, {warmup}")
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch_threads(threads), torch.no_grad():
        for r in range(warmup + rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                start = clock()
                fns[name]()
                if r >= warmup:
                    times[name].append(clock() - start)
    return times


def paired_ratios(times: Mapping[str, Sequence[float]], name: str, reference: str) -> list[float]:
    """``times[name][k] / times[reference][k]`` for every round ``k``."""
    a, b = times[name], times[reference]
    if len(a) != len(b):
        raise ValueError(f"{name} has {len(a)} rounds, {reference} {len(b)}")
    return [x / y for x, y in zip(a, b)]


@dataclass(frozen=True)
class Interval:
    """A median and a confidence interval for it."""

    median: float
    low: float
    high: float
    confidence: float  # the interval's exact coverage (at least the one asked for, if n allows)

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside ``[low, high]``."""
        return value < self.low or value > self.high


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The median of ``values`` and a distribution-free confidence interval for it.

    The interval is ``[x_(k), x_(n+1-k)]`` of the sorted values with the largest ``k`` whose
    coverage ``1 - 2 P(Binomial(n, 1/2) < k)`` is at least ``confidence``: it assumes only
    independent draws from one distribution, not a normal one. With too few values for the
    requested confidence (fewer than 6 for 95%) it is the full range, and ``confidence`` says
    what that range covers.
    """
    n = len(values)
    if n == 0:
        raise ValueError("need at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs = sorted(values)

    def coverage(k: int) -> float:  # P(x_(k) <= median <= x_(n+1-k))
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return Interval(statistics.median(xs), xs[k - 1], xs[n - k], coverage(k))
