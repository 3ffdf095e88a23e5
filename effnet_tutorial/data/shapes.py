"""A synthetic detection dataset written in COCO format: coloured shapes on varied backgrounds.

Each image holds a random number of objects from four classes (circle, square, triangle, cross),
with random colours, sizes from a few pixels to half the image, rotations and overlaps, on a
background that is a colour gradient with noise and clutter lines. The dataset is written to disk
exactly like COCO (``images/<split>/*.png`` plus ``annotations/instances_<split>.json``), so that
training and evaluation read it through the same code path as real data.

Deterministic for a seed.

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")


@dataclass
class Scene:
    """One generated image with its objects: boxes are **xyxy** pixels, labels 0-based."""

    image: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (N, 4) float32 xyxy
    labels: np.ndarray  # (N,) int64, index into SHAPE_CLASSES


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (np.cos(rng.uniform(0, np.pi)) * xx / w + np.sin(rng.uniform(0, np.pi)) * yy / h)
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    for _ in range(int(rng.integers(0, 6))):  # clutter: thin random lines
        y0, x0, y1, x1 = rng.uniform(0, 1, 4) * [h, w, h, w]
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        ys = np.clip(np.linspace(y0, y1, n).astype(int), 0, h - 1)
        xs = np.clip(np.linspace(x0, x1, n).astype(int), 0, w - 1)
        img[ys, xs] = rng.uniform(0, 255, 3)
    img += rng.normal(0, rng.uniform(2, 10), img.shape)
    return img


def _mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
          angle: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == "square":
        return (np.abs(u) <= r * 0.75) & (np.abs(v) <= r * 0.75)
    if kind == "triangle":
        return (v <= 0.5 * r) & (np.sqrt(3) * u - v <= r) & (-np.sqrt(3) * u - v <= r)
    if kind == "cross":
        arm = r * 0.3
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    raise ValueError(f"unknown shape {kind!r}; valid: {SHAPE_CLASSES}")


def render_scene(rng: np.random.Generator, height: int = 256, width: int = 256,
                 max_objects: int = 6, min_size: float = 8.0, max_size: float = 0.5) -> Scene:
    """Draw one scene; object sizes are log-uniform between ``min_size`` pixels and
    ``max_size`` times the shorter image side, so small objects are common.
    """
    if height < 16 or width < 16 or max_objects < 0 or min_size < 2:
        raise ValueError("need height, width >= 16, max_objects >= 0 and min_size >= 2")
    img = _background(rng, height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    owner = np.full((height, width), -1, np.int64)  # which object each pixel shows
    areas, labels = [], []
    for _ in range(int(rng.integers(0, max_objects + 1))):
        label = int(rng.integers(0, len(SHAPE_CLASSES)))
        side = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size * min(height, width)))))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        mask = _mask(SHAPE_CLASSES[label], yy, xx, cy, cx, side / 2, rng.uniform(0, 2 * np.pi))
        if mask.sum() < 4:  # fell off the image
            continue
        img[mask] = rng.uniform(0, 255, 3) + rng.normal(0, 6, (int(mask.sum()), 3))
        owner[mask] = len(labels)
        areas.append(int(mask.sum()))
        labels.append(label)
    # Later shapes may hide earlier ones: keep an object while at least 30% of it is visible,
    # with the box of its visible pixels.
    boxes, kept = [], []
    for k, (area, label) in enumerate(zip(areas, labels)):
        ys, xs = np.nonzero(owner == k)
        if len(ys) >= max(4, 0.3 * area):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            kept.append(label)
    boxes_arr = np.array(boxes, np.float32).reshape(-1, 4)
    labels = kept
    return Scene(np.clip(img, 0, 255).astype(np.uint8), boxes_arr, np.array(labels, np.int64))


def write_coco_dataset(root: str | Path, split: str, num_images: int, seed: int = 0,
                       height: int = 256, width: int = 256, max_objects: int = 6,
                       min_size: float = 8.0, max_size: float = 0.5) -> Path:
    """Generate ``num_images`` scenes into ``root/images/<split>/`` and write
    ``root/annotations/instances_<split>.json`` (COCO: boxes ``[x, y, w, h]``, category ids from
    1); returns the JSON's path.
    """
    from PIL import Image

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    root = Path(root)
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        scene = render_scene(rng, height, width, max_objects, min_size, max_size)
        name = f"{i:06d}.png"
        Image.fromarray(scene.image).save(image_dir / name)
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for box, label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            x1, y1, x2, y2 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(SHAPE_CLASSES)]
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
