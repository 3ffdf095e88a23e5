"""Preprocessing and the detection transforms that move boxes with the image.

Every image a detector sees, in training, evaluation or :func:`~effnet_tutorial.inference.predict`,
goes through :func:`resize_and_pad` and :func:`normalize` here: EfficientDet takes square inputs
(512x512 for D0), so an image is scaled until its longer side fits, pasted at the top-left and
padded with the mean colour (zero after normalisation); boxes found on that canvas times the
returned scale are boxes on the original image (effdet's ``ResizePad`` and ``img_scale``, automl's
``resize_and_crop_image``).

The paper's training recipe (Tan et al. 2020, Sec. 5.1; automl ``input_rand_hflip``,
``jitter_min=0.1``, ``jitter_max=2.0``): flip horizontally with probability 0.5, then scale the
image so that its longer side is ``factor * size`` with ``factor`` uniform in [0.1, 2.0], crop a
random ``size x size`` window if it is larger, and pad to ``size x size`` with the mean colour.
Evaluation uses the same resize-and-pad with factor 1 and no crop. Every transform takes and
returns ``(image, target)``: a float ``(3, H, W)`` image in 0-255 units and a target whose
``boxes`` are **xyxy** pixels; boxes cut by a crop are clipped, and dropped if nothing is left.

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: ImageNet channel means and standard deviations in 0-255 pixel units (effdet, automl).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Target = dict[str, torch.Tensor]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]
ImageLike = torch.Tensor | np.ndarray


# --------------------------------------------------------------------------- preprocessing
def as_chw_tensor(image: ImageLike) -> torch.Tensor:
    """An image as a float ``(3, H, W)`` tensor in 0-255 units.

    Accepts ``(3, H, W)`` tensors and ``(H, W, 3)`` arrays or tensors (what PIL and OpenCV
    give), uint8 or float in 0-255.
    """
    x = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got {getattr(x, 'shape', type(x))}")
    if x.shape[0] != 3 and x.shape[-1] == 3:
        x = x.permute(2, 0, 1)
    if x.shape[0] != 3:
        raise ValueError(f"an image must have 3 channels (RGB), got shape {tuple(x.shape)}")
    if x.is_floating_point() and x.numel() and x.max() <= 1.0:
        raise ValueError("float images must be in 0-255 pixel units (multiply [0, 1] images by 255)")
    return x.float()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Subtract the ImageNet mean and divide by its standard deviation (0-255 units in)."""
    mean = images.new_tensor(IMAGENET_MEAN).view(-1, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(-1, 1, 1)
    return (images - mean) / std


def resize_and_pad(image: ImageLike, size: int) -> tuple[torch.Tensor, float]:
    """Scale an image to fit ``size x size`` keeping its aspect ratio and paste it at the top-left
    of a mean-colour canvas; returns ``(canvas, scale)``.

    ``scale`` is original pixels per canvas pixel: a box on the canvas times ``scale`` is a box
    on the original image. The image half of :class:`ResizePad`.
    """
    x = as_chw_tensor(image)
    canvas, target = ResizePad(size)(x, {"boxes": x.new_zeros(0, 4), "labels": x.new_zeros(0)})
    return canvas, float(target["scale"])


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform], rng: random.Random | None = None) -> None:
        self.transforms = list(transforms)
        self.rng = rng  # the generator the random transforms share, if any (reseedable)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class HorizontalFlip:
    """Mirror left-right with probability ``p``: ``x -> W - x`` for both box corners."""

    def __init__(self, p: float = 0.5, rng: random.Random | None = None) -> None:
        self.p, self.rng = p, rng or random.Random()

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.rng.random() >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}


def _resize(image: torch.Tensor, boxes: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    image = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
    scale = boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
    return image, boxes * scale


def _place(image: torch.Tensor, target: Target, size: int, top: int, left: int) -> tuple[torch.Tensor, Target]:
    """Crop the window starting at (top, left) and pad to size x size; clip and filter boxes."""
    window = image[:, top:top + size, left:left + size]
    canvas = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).repeat(1, size, size)
    canvas[:, :window.shape[1], :window.shape[2]] = window
    boxes = target["boxes"] - target["boxes"].new_tensor([left, top, left, top])
    limit = boxes.new_tensor([window.shape[2], window.shape[1]] * 2)
    boxes = torch.min(boxes.clamp(min=0), limit)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 1) & ((boxes[:, 3] - boxes[:, 1]) > 1)
    return canvas, {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}


class ResizePad:
    """Evaluation: fit the longer side to ``size``, paste top-left, pad with the mean colour.

    Adds ``target["scale"]``: original pixels per output pixel, to map predictions back.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        factor = min(self.size / h, self.size / w)
        image, boxes = _resize(image.float(), target["boxes"], factor)
        image, target = _place(image, {**target, "boxes": boxes}, self.size, 0, 0)
        return image, {**target, "scale": torch.tensor(1.0 / factor)}


class RandomScaleCrop:
    """Training: scale jitter in ``scale_range`` times ``size``, random crop, pad (the paper's recipe).
    """

    def __init__(self, size: int, scale_range: tuple[float, float] = (0.1, 2.0),
                 rng: random.Random | None = None) -> None:
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.size, self.scale_range, self.rng = size, scale_range, rng or random.Random()

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        jitter = self.rng.uniform(*self.scale_range)
        factor = jitter * min(self.size / h, self.size / w)
        image, boxes = _resize(image.float(), target["boxes"], factor)
        nh, nw = image.shape[-2:]
        top = self.rng.randint(0, max(0, nh - self.size))
        left = self.rng.randint(0, max(0, nw - self.size))
        image, target = _place(image, {**target, "boxes": boxes}, self.size, top, left)
        return image, {**target, "scale": torch.tensor(1.0 / factor)}


class Normalize:
    """ImageNet mean/std normalisation of a 0-255 image; boxes untouched."""

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return normalize(image.float()), target


def train_transforms(size: int, scale_range: tuple[float, float] = (0.1, 2.0), seed: int | None = None) -> Compose:
    """The paper's training pipeline: flip, scale jitter with crop, pad, normalise."""
    rng = random.Random(seed)
    return Compose([HorizontalFlip(0.5, rng), RandomScaleCrop(size, scale_range, rng), Normalize()], rng)


def eval_transforms(size: int) -> Compose:
    """Evaluation pipeline: resize-and-pad, normalise."""
    return Compose([ResizePad(size), Normalize()])


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack same-sized images; keep targets as a list (each image has its own number of boxes)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
