"""The benchmark as one call (:func:`run`) and one command (``python -m effnet_tutorial.benchmark``).

``benchmarks/bench.py`` in the repository is this command with the repository's output path.
It needs the ``reference`` extra (timm, torchvision, effdet): ``pip install
'effnet_tutorial[reference]'``.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..extras import require
from .memory import memory_rows, memory_worker
from .timing import Row, Settings, choose_threads, format_table, machine_info
from .workloads import classifier_rows, compile_row, detector_rows

#: Where ``python -m effnet_tutorial.benchmark`` writes its results unless told otherwise.
DEFAULT_OUT = Path("bench.json")


def run(mode: str = "full", threads: int | None = None, out: Path | None = DEFAULT_OUT,
        memory: bool = True, compile: bool = False, compile_budget_s: float = 300.0,
        only: str | None = None) -> dict:
    """Run the benchmark; returns (and writes, unless ``out`` is None) the results dict.

    ``mode`` is ``full``, ``quick`` or ``smoke``
    (:meth:`~effnet_tutorial.benchmark.timing.Settings.make`); ``only`` picks one group of rows
    (``classifier``, ``detector``, ``memory`` or ``compile``).
    """
    require("timm", "torchvision", "effdet",
            purpose="The benchmark against the reference implementations")
    threads, why = choose_threads(threads)
    torch.set_num_threads(threads)
    s = Settings.make(mode, threads)
    info = machine_info(threads)
    info["threads_reason"] = why
    print(f"{info['cpu']} | {info['cores']} cores | torch threads {threads} ({why}) | load average "
          f"{info['load_average'][0]:.2f} | mode {mode}", flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    if only in (None, "classifier"):
        rows += classifier_rows(s)
    if only in (None, "detector"):
        rows += detector_rows(s)
    if memory and only in (None, "memory"):
        rows += memory_rows(mode, threads, samples=3 if mode == "full" else 1)
    if only in (None, "compile"):
        rows.append(compile_row(s, compile_budget_s) if compile else Row(
            "b0 inference, torch.compile", "ours eager",
            note="skipped: not run by default (pass --compile)"))
    info["load_average_end"] = list(os.getloadavg())
    info["seconds"] = time.perf_counter() - start
    result = {"machine": info, "settings": asdict(s), "mode": mode,
              "rows": [asdict(r) for r in rows]}
    print()
    print(format_table(rows))
    print(f"\n{info['seconds']:.0f} s; load average at the end {info['load_average_end'][0]:.2f}")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {os.path.relpath(out)}")
    return result


def main(argv: list[str] | None = None, default_out: Path = DEFAULT_OUT) -> None:
    """The command line: ``--quick``, ``--mode``, ``--out``, ``--threads``, ``--only``, ...."""
    p = argparse.ArgumentParser(prog="python -m effnet_tutorial.benchmark",
                                description="Benchmark effnet_tutorial against timm, torchvision and effdet on this machine.")
    p.add_argument("--quick", action="store_true", help="5 repetitions instead of 7")
    p.add_argument("--mode", choices=["full", "quick", "smoke"], default=None,
                   help="smoke: tiny inputs, for CI (the book under BOOK_SMOKE=1)")
    p.add_argument("--out", type=Path, default=default_out, help=f"results JSON (default: {default_out})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores, at most 8; 1 if the load average exceeds the cores)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    p.add_argument("--only", choices=["classifier", "detector", "memory", "compile"], default=None)
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    mode = a.mode or ("quick" if a.quick else "full")
    if a.memory_worker:
        s = Settings.make(mode, a.threads or 1)
        print(json.dumps(memory_worker(a.memory_worker, s)))
        return
    run(mode, a.threads, a.out, memory=not a.no_memory, compile=a.compile, only=a.only)

