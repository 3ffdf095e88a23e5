"""Measured benchmark records that ship with the package, for the chapters that plot them.

A record is a JSON file in ``effnet_tutorial/benchmark/measured/``, written by a benchmark script
of the repository with ``--record`` (``benchmarks/train_d0_cpu.py --record`` writes
``train_d0_cpu.json``). Installing the package installs the records, so a chapter plots them
from any folder, Colab included.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import json
from pathlib import Path

#: The folder of the shipped records.
MEASURED = Path(__file__).resolve().parent / "measured"


def record_path(name: str) -> Path:
    """The file of the record ``name`` (e.g. ``"train_d0_cpu"``), whether or not it exists."""
    return MEASURED / f"{name}.json"


def list_records() -> list[str]:
    """The names of the records this installation ships."""
    return sorted(p.stem for p in MEASURED.glob("*.json"))


def load_record(name: str) -> dict:
    """The record ``name`` as a dict; a clear error naming the records there are if it is absent."""
    path = record_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no measured record {name!r} in this installation of effnet_tutorial (records: "
            f"{', '.join(list_records()) or 'none'}); a benchmark script of the repository "
            f"writes it with --record")
    return json.loads(path.read_text())


__all__ = ["MEASURED", "list_records", "load_record", "record_path"]
