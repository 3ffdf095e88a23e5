"""Benchmarks against the reference implementations (timm, torchvision, effdet), and the records.

``python -m effnet_tutorial.benchmark [--quick | --mode smoke]`` (or
:func:`~effnet_tutorial.benchmark.command.run`) times our models against the references on this
machine and prints a table of ratios; ``benchmarks/bench.py`` in
the repository is the same command. The modules: :mod:`~effnet_tutorial.benchmark.timing` (how a
row is measured), :mod:`~effnet_tutorial.benchmark.workloads` (what is run),
:mod:`~effnet_tutorial.benchmark.memory` (peak training memory),
:mod:`~effnet_tutorial.benchmark.command` (the whole run) and
:mod:`~effnet_tutorial.benchmark.records` (measured records the chapters plot). Needs the
``reference`` extra, except for the records.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

from .records import list_records, load_record

__all__ = ["list_records", "load_record", "run"]


def __getattr__(name: str):
    # ``run`` imports torch-heavy modules; load them when asked for, not to read a record
    if name == "run":
        from .command import run

        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
