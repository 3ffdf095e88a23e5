"""Benchmark effnet_tutorial against timm, torchvision and effdet on this machine.

    python benchmarks/bench.py [--quick] [--mode smoke] [--out benchmarks/results/bench.json]

The code is the package's (``effnet_tutorial.benchmark``, also ``python -m
effnet_tutorial.benchmark``); this script runs it with the repository's output file. See
benchmarks/README.md for what each row means.
"""
from pathlib import Path

from effnet_tutorial.benchmark.command import main

if __name__ == "__main__":
    main(default_out=Path(__file__).resolve().parent / "results" / "bench.json")
