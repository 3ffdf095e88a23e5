"""A generated image-classification task on which width, depth and resolution all matter.

Each class is a (shape, texture) pair: four silhouettes (disk, square, triangle, ring) filled with
one of four stripe textures (horizontal, vertical or diagonal stripes, or a checkerboard) drawn in
a dark and a light colour. Images are generated at 32 px by default with stripe periods of size/6
to size/3 pixels (5 to 10 at 32 px): downsampling to the network's input resolution averages the
finest stripes away first, so a higher input resolution helps, gradually; telling a ring from a
disk or a triangle from a square at a few pixels needs features and receptive field, so width and
depth can help. Position, size, rotation, colours, stripe phase and sensor noise vary, so the task
is not solved by memorising pixels.

Everything comes from a seeded NumPy generator: the same seed gives the same images, and classes
are exactly balanced.

In the book: Chapter 5, *Scaling one dimension at a time, and all three together*.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SHAPES: tuple[str, ...] = ("disk", "square", "triangle", "ring")
TEXTURES: tuple[str, ...] = ("horizontal", "vertical", "diagonal", "checker")
CLASS_NAMES: tuple[str, ...] = tuple(f"{s}/{t}" for s in SHAPES for t in TEXTURES)


@dataclass
class ProxySplit:
    """Images as ``uint8 (N, 3, S, S)`` and labels as ``int64 (N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
                angle: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if shape == "disk":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "ring":
        d2 = dx ** 2 + dy ** 2
        return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "triangle":  # equilateral, pointing "up" in the rotated frame
        return (v <= 0.5 * r) & (np.sqrt(3) * u - v <= r) & (-np.sqrt(3) * u - v <= r)
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _texture(texture: str, yy: np.ndarray, xx: np.ndarray, period: int, phase: int) -> np.ndarray:
    if texture == "horizontal":
        t = (yy + phase) % period
    elif texture == "vertical":
        t = (xx + phase) % period
    elif texture == "diagonal":
        t = (xx + yy + phase) % period
    elif texture == "checker":
        half = max(1, period // 2)
        return (((yy + phase) // half + (xx + phase) // half) % 2).astype(bool)
    else:
        raise ValueError(f"unknown texture {texture!r}; valid: {TEXTURES}")
    return t < period / 2


def render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(3, size, size)`` uint8 image of class ``label`` drawn with ``rng``."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.25, 0.45) * size
    cy, cx = rng.uniform(r * 0.8, size - r * 0.8, size=2)
    mask = _shape_mask(shape, yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi))
    # Periods from size/6 to size/3 px (5 to 10 at 32 px): halving the resolution wipes out the
    # finest stripes and keeps the coarsest, so accuracy climbs gradually with resolution.
    period = int(rng.integers(max(2, size // 6), max(3, size // 3) + 1))
    stripes = _texture(texture, yy.astype(int), xx.astype(int), period, int(rng.integers(0, period)))
    background = rng.uniform(0, 255, size=3)
    dark, light = rng.uniform(0, 90, size=3), rng.uniform(165, 255, size=3)
    fg_a, fg_b = (dark, light) if rng.random() < 0.5 else (light, dark)
    img = np.broadcast_to(background[:, None, None], (3, size, size)).copy()
    fill = np.where(stripes[None], fg_a[:, None, None], fg_b[:, None, None])
    img = np.where(mask[None], fill, img)
    img += rng.normal(0, rng.uniform(2, 10), size=img.shape)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def make_proxy_dataset(per_class: int, size: int = 32, seed: int = 0) -> ProxySplit:
    """``per_class`` images of every class (balanced), shuffled, deterministic for ``seed``."""
    if per_class < 1 or size < 16:
        raise ValueError(f"need per_class >= 1 and size >= 16, got {per_class}, {size}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    rng.shuffle(labels)
    images = np.stack([render(int(y), size, rng) for y in labels])
    return ProxySplit(torch.from_numpy(images), torch.from_numpy(labels).long())


def make_proxy_splits(train_per_class: int, test_per_class: int, size: int = 32,
                      seed: int = 0) -> tuple[ProxySplit, ProxySplit]:
    """A training split and a held-out split drawn from independent seeds."""
    return (make_proxy_dataset(train_per_class, size, seed),
            make_proxy_dataset(test_per_class, size, seed + 10_000))
