"""Shared test helpers: randomised weights so equivalence checks are not trivially satisfied."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN layer non-trivial statistics and affine parameters (in place).

    Fresh models have running mean 0 and variance 1, which hides BN-epsilon and ordering bugs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| divided by the output scale max |b|."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def write_tiny_shapes(root, train: int, val: int, seed: int = 0):
    """A 64-pixel synthetic COCO folder: ``train`` and ``val`` images, seeds ``seed`` and ``seed + 1``."""
    from effnet_tutorial.data.shapes import write_coco_dataset

    write_coco_dataset(root, "train", train, seed=seed, height=64, width=64, max_objects=3)
    write_coco_dataset(root, "val", val, seed=seed + 1, height=64, width=64, max_objects=3)
    return root


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (the folder is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
