"""How the benchmark measures: settings, one table row, alternating timed pairs, the machine.

Every time row runs both implementations in one process, on identical inputs, with the same
thread count, alternating them (ours then reference, then reference then ours, ...) after a
warm-up. Each pair ran back to back, so its ratio ours / reference cancels a change of machine
speed between pairs; a row's headline is the **median of the per-pair ratios** with their
interquartile range (:func:`pair_ratio_summary`), next to the median times. No timing is ever
asserted in a test; the arithmetic is.

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
    #: The headline ratio. For a time row the median of the per-pair ratios ours_i / ref_i; for
    #: a memory row (separate processes, no pairs) ours / reference.
    ratio: float | None = None
    unit: str = "ms"
    note: str = ""
    ours_runs: list = field(default_factory=list)
    ref_runs: list = field(default_factory=list)
    pair_quartiles: list | None = None  # [q1, q3] of ours_i / ref_i over the pairs (time rows)
    ratio_of_medians: float | None = None  # median(ours) / median(ref), for comparison only



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



def pair_ratio_summary(ours: list[float], ref: list[float]) -> tuple[float, float, float]:
    """The median and the quartiles ``(median, q1, q3)`` of the per-pair ratios ours_i / ref_i.

    ``ours[i]`` and ``ref[i]`` must be the two times of one back-to-back pair. All three use the
    same linear-interpolation quantile, so ``q1 <= median <= q3`` always holds; the ratio of the
    two medians has no such guarantee (on a machine whose speed drifts it can fall outside the
    quartiles of the ratios it summarises), which is why it is not the headline.
    """
    if len(ours) != len(ref) or not ours:
        raise ValueError(f"need the same positive number of times on both sides, got {len(ours)} "
                         f"and {len(ref)}")
    if min(ref) <= 0:
        raise ValueError("reference times must be positive")
    ratios = sorted(a / b for a, b in zip(ours, ref))
    return _quantile(ratios, 0.5), _quantile(ratios, 0.25), _quantile(ratios, 0.75)


def describe_load(load: float, cores: int) -> str:
    """A few words for a 1-minute load average on ``cores`` cores, for prose generated from it.

    At most a quarter of the cores' worth of load: ``"a nearly idle machine"``; up to the core
    count: ``"a shared machine, partly busy with other jobs"``; above it, where jobs wait for a
    core: ``"a busy machine (more runnable jobs than cores)"``.
    """
    if cores < 1 or load < 0:
        raise ValueError(f"need cores >= 1 and load >= 0, got {cores} and {load}")
    if load <= 0.25 * cores:
        return "a nearly idle machine"
    if load <= cores:
        return "a shared machine, partly busy with other jobs"
    return "a busy machine (more runnable jobs than cores)"


def verdict(row: Row) -> str:
    """``"faster"``, ``"slower"`` or ``"a tie"`` for a time row, from its per-pair quartiles:
    faster when even the upper quartile of ours / reference is below 1, slower when even the lower
    one is above 1, a tie when the interquartile range contains 1."""
    if row.pair_quartiles is None:
        raise ValueError(f"row {row.name!r} has no per-pair quartiles (not a time row)")
    q1, q3 = row.pair_quartiles
    return "faster" if q3 < 1.0 else "slower" if q1 > 1.0 else "a tie"


def compare(name: str, reference: str, ours: Callable[[], object], ref: Callable[[], object],
            s: Settings, note: str = "") -> Row:
    """Alternate ``ours`` and ``ref`` after ``s.warmup`` runs of each; the per-pair ratios.

    At least ``s.repeats`` pairs, more (up to ``s.max_repeats``) until the timed pairs add up
    to ``s.min_seconds``. The row's ``ratio`` is the median of the per-pair ratios and
    ``pair_quartiles`` their quartiles (each pair ran back to back, so a change of machine speed
    between pairs cancels in its ratio); the median times and their ratio are kept beside them.
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
    median, q1, q3 = pair_ratio_summary(t_ours, t_ref)
    row = Row(name, reference, a, b, median, note=note, ours_runs=t_ours, ref_runs=t_ref,
              pair_quartiles=[q1, q3], ratio_of_medians=a / b)
    print(f"  {name}: ours {a:.1f} ms, {reference} {b:.1f} ms, per-pair ratio {median:.2f} "
          f"(IQR {q1:.2f}-{q3:.2f}, {len(t_ours)} pairs)", flush=True)
    return row


def _quantile(sorted_values: list, q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def format_table(rows: list[Row]) -> str:
    """A plain-text table: row, reference, the median times (or memory peaks), the ratio, the
    number of pairs and the interquartile range of the per-pair ratios, note.

    For a time row the ratio is the median of the per-pair ratios, which lies inside its IQR;
    for a memory row it is ours / reference (no pairs, no IQR).
    """
    w = max([50] + [len(r.name) for r in rows])  # the name column fits the longest name
    head = (f"{'row':<{w}} {'reference':<22} {'ours':>10} {'ref':>10} {'ratio':>6} "
            f"{'pairs':>5} {'IQR':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.ratio is None and r.ours_ms is not None:
            lines.append(f"{r.name:<{w}} {r.reference:<22} {r.ours_ms:>7.1f} {r.unit:<2} "
                         f"{r.ref_ms:>7.1f} {r.unit:<2} {'-':>6} {'':>15}  {r.note}")
            continue
        if r.ratio is None:
            lines.append(f"{r.name:<{w}} {r.reference:<22} {'-':>10} {'-':>10} {'-':>6} {'':>15}  "
                         f"{r.note}")
            continue
        u = r.unit
        q = r.pair_quartiles
        pairs = f"{len(r.ours_runs):>5} {q[0]:>4.2f}-{q[1]:<4.2f}" if q else f"{'':>15}"
        lines.append(f"{r.name:<{w}} {r.reference:<22} {r.ours_ms:>7.1f} {u:<2} {r.ref_ms:>7.1f} "
                     f"{u:<2} {r.ratio:>6.2f} {pairs}  {r.note}")
    lines.append("ratio: time rows, the median of the per-pair ratios ours / reference (IQR: their "
                 "quartiles); memory rows, ours / reference")
    return "\n".join(lines)
