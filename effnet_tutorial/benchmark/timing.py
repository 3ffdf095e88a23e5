"""How the benchmark measures: settings, one table row, alternating timed pairs, the machine.

Every time row runs both implementations in one process, on identical inputs, with the same
thread count, alternating them (ours then reference, then reference then ours, ...) after a
warm-up; a row reports the medians, their ratio ours / reference and the quartiles of the
per-pair ratios. No timing is ever asserted in a test.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import torch


@dataclass
class Settings:
    """Sizes and repetitions: the issue's full sizes, or tiny ones for a smoke run."""

    cls_batch: int = 8
    cls_size: int = 224
    det_batch: int = 2
    det_size: int = 512
    repeats: int = 7
    warmup: int = 2
    threads: int = 2
    #: keep alternating past ``repeats`` until the row's pairs took this long (cheap rows get
    #: more pairs, so their medians are as steady as those of the expensive ones) ...
    min_seconds: float = 30.0
    #: ... but never more pairs than this
    max_repeats: int = 41

    @classmethod
    def make(cls, mode: str, threads: int) -> "Settings":
        """``full`` (issue sizes, at least 7 pairs and 30 s per row), ``quick`` (at least 5 pairs
        and 12 s) or ``smoke`` (tiny inputs, 2 pairs)."""
        if mode == "full":
            return cls(threads=threads)
        if mode == "quick":
            return cls(repeats=5, warmup=1, threads=threads, min_seconds=12.0, max_repeats=25)
        if mode == "smoke":
            return cls(cls_batch=2, cls_size=64, det_batch=2, det_size=128, repeats=2, warmup=1,
                       threads=threads, min_seconds=0.0, max_repeats=2)
        raise ValueError(f"unknown mode {mode!r}")


@dataclass
class Row:
    """One line of the table."""

    name: str
    reference: str
    ours_ms: float | None = None
    ref_ms: float | None = None
    ratio: float | None = None
    unit: str = "ms"
    note: str = ""
    ours_runs: list = field(default_factory=list)
    ref_runs: list = field(default_factory=list)
    pair_quartiles: list | None = None  # quartiles of ours_i / ref_i over the pairs



def machine_info(threads: int) -> dict:
    """CPU model, cores, load average, library versions and thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("timm", "torchvision", "effdet", "onnxruntime"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", None) or _dist_version(mod)
        except ImportError:
            versions[mod] = None
    import effnet_tutorial

    versions["effnet_tutorial"] = effnet_tutorial.__version__
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads,
            "load_average": list(os.getloadavg()), "gpu": gpu, "platform": platform.platform(),
            "versions": versions, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def choose_threads(threads: int | None = None) -> tuple[int, str]:
    """The torch thread count and why: as given, else all cores (at most 8), else 1 when busy.

    When other jobs already keep every core busy (1-minute load average above the core count),
    several OpenMP threads per process wait on each other at every barrier and each operator
    can run several times slower than on one thread; both sides then get one thread.
    """
    if threads:
        return threads, "--threads"
    cores = os.cpu_count() or 1
    if os.getloadavg()[0] > cores:
        return 1, f"load average {os.getloadavg()[0]:.1f} > {cores} cores"
    return min(cores, 8), "all cores"



def compare(name: str, reference: str, ours: Callable[[], object], ref: Callable[[], object],
            s: Settings, note: str = "") -> Row:
    """Alternate ``ours`` and ``ref`` after ``s.warmup`` runs of each; medians and their ratio.

    At least ``s.repeats`` pairs, more (up to ``s.max_repeats``) until the timed pairs add up
    to ``s.min_seconds``. Besides the ratio of the medians, the row keeps the quartiles of the
    per-pair ratios (each pair ran back to back, so a change of machine speed between pairs
    cancels in its ratio): the spread a reader should allow for.
    """
    for _ in range(s.warmup):
        ours()
        ref()
    t_ours, t_ref = [], []
    i = 0
    while i < s.repeats or (sum(t_ours) + sum(t_ref) < s.min_seconds * 1000 and i < s.max_repeats):
        pair = [(ours, t_ours), (ref, t_ref)]
        for fn, out in (pair if i % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
        i += 1
    a, b = statistics.median(t_ours), statistics.median(t_ref)
    pairs = sorted(x / y for x, y in zip(t_ours, t_ref))
    spread = [_quantile(pairs, 0.25), _quantile(pairs, 0.75)]
    row = Row(name, reference, a, b, a / b, note=note, ours_runs=t_ours, ref_runs=t_ref,
              pair_quartiles=spread)
    print(f"  {name}: ours {a:.1f} ms, {reference} {b:.1f} ms, ratio {a / b:.2f} "
          f"(pairs {len(pairs)}, per-pair ratios {spread[0]:.2f}-{spread[1]:.2f})", flush=True)
    return row


def _quantile(sorted_values: list, q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def format_table(rows: list[Row]) -> str:
    """A plain-text table: row, reference, ours, reference, ratio, pairs and the per-pair
    ratios' quartiles (time rows), note."""
    head = (f"{'row':<50} {'reference':<22} {'ours':>10} {'ref':>10} {'ratio':>6} "
            f"{'pairs':>5} {'per pair':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.ratio is None and r.ours_ms is not None:
            lines.append(f"{r.name:<50} {r.reference:<22} {r.ours_ms:>7.1f} {r.unit:<2} "
                         f"{r.ref_ms:>7.1f} {r.unit:<2} {'-':>6} {'':>15}  {r.note}")
            continue
        if r.ratio is None:
            lines.append(f"{r.name:<50} {r.reference:<22} {'-':>10} {'-':>10} {'-':>6} {'':>15}  "
                         f"{r.note}")
            continue
        u = r.unit
        q = r.pair_quartiles
        pairs = f"{len(r.ours_runs):>5} {q[0]:>4.2f}-{q[1]:<4.2f}" if q else f"{'':>15}"
        lines.append(f"{r.name:<50} {r.reference:<22} {r.ours_ms:>7.1f} {u:<2} {r.ref_ms:>7.1f} "
                     f"{u:<2} {r.ratio:>6.2f} {pairs}  {r.note}")
    return "\n".join(lines)
