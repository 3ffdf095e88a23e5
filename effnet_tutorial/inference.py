"""From an image to detections: resize-and-pad, normalise, forward, decode, NMS, undo the resize.

EfficientDet sees square inputs (512x512 for D0). An image of any shape is scaled so its longer
side fits, pasted at the top-left, and padded with the mean colour (zero after normalisation);
boxes predicted on that canvas are multiplied back by the scale (effdet's ``ResizePad`` and
``img_scale``; automl's ``resize_and_crop_image``).

In the book: Chapter 12, *EfficientDet D0–D7*.
"""
from __future__ import annotations

from functools import lru_cache
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .anchors import generate_anchors
from .postprocess import postprocess_detections

#: ImageNet channel means and standard deviations in 0-255 pixel units (effdet, automl).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

ImageLike = torch.Tensor | np.ndarray


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


def resize_and_pad(image: ImageLike, size: int) -> tuple[torch.Tensor, float]:
    """Scale an image so that it fits ``size x size`` keeping its aspect ratio, paste it at the
    top-left of a canvas filled with the mean colour; returns ``(canvas, scale)``.

    ``scale`` is original pixels per canvas pixel: a box on the canvas times ``scale`` is a box
    on the original image.
    """
    x = as_chw_tensor(image)
    h, w = x.shape[-2:]
    factor = min(size / h, size / w)
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    resized = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    canvas = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).repeat(1, size, size)
    canvas[:, :nh, :nw] = resized
    return canvas, 1.0 / factor


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Subtract the ImageNet mean and divide by its standard deviation (0-255 units in)."""
    mean = images.new_tensor(IMAGENET_MEAN).view(-1, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(-1, 1, 1)
    return (images - mean) / std


@lru_cache(maxsize=16)
def _anchors(size: tuple[int, int], min_level: int, max_level: int, num_scales: int,
             aspect_ratios: tuple, anchor_scale: float) -> torch.Tensor:
    return generate_anchors(size, min_level, max_level, num_scales, aspect_ratios, anchor_scale)


def anchors_for(model: torch.nn.Module, size: tuple[int, int]) -> torch.Tensor:
    """The **xyxy** anchors of ``model``'s configuration for an input of ``size = (H, W)`` (cached).
    """
    c = model.config
    return _anchors(tuple(size), c.min_level, c.max_level, c.num_scales, tuple(c.aspect_ratios),
                    c.anchor_scale)


@torch.no_grad()
def predict(model: torch.nn.Module, images: Sequence[ImageLike], image_size: int = 0,
            soft_nms: bool = False, score_threshold: float = 0.0,
            max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
    """Detect objects in images of any size; boxes come back **xyxy in each image's pixels**.

    Returns one dict per image: ``boxes`` ``(K, 4)``, ``scores`` ``(K,)`` and 0-based ``labels``
    ``(K,)``, best first, ``K <= max_detections``, scores below ``score_threshold`` dropped.
    ``image_size`` defaults to the model's designed input size.
    """
    if isinstance(images, (torch.Tensor, np.ndarray)) and np.ndim(images) == 3:
        images = [images]
    size = image_size or model.config.image_size
    device = next(model.parameters()).device
    canvases, scales, sizes = [], [], []
    for image in images:
        canvas, scale = resize_and_pad(image, size)
        canvases.append(canvas)
        scales.append(scale)
        sizes.append(as_chw_tensor(image).shape[-2:])
    batch = normalize(torch.stack(canvases)).to(device)
    was_training = model.training
    model.eval()
    try:
        cls_out, box_out = model(batch)
    finally:
        model.train(was_training)
    detections = postprocess_detections(
        cls_out, box_out, anchors_for(model, (size, size)).to(device), model.num_classes,
        max_detections=max_detections, soft_nms=soft_nms,
        image_scales=torch.tensor(scales, device=device),
        image_sizes=torch.tensor([tuple(s) for s in sizes], device=device))
    return [{k: v[d["scores"] >= score_threshold].cpu() for k, v in d.items()} for d in detections]
