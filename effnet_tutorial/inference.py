"""From images to detections in one call: resize-and-pad, normalise, forward, decode, NMS, undo
the resize.

:func:`predict` strings together what the earlier chapters built: the preprocessing of
:mod:`effnet_tutorial.data.transforms`, the anchors of :mod:`effnet_tutorial.anchors` and the
post-processing of :mod:`effnet_tutorial.postprocess`; boxes predicted on the padded canvas are
multiplied back by each image's scale.

In the book: Chapter 12, *EfficientDet D0–D7*.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .anchors import anchors_for
from .data.transforms import ImageLike, as_chw_tensor, normalize, resize_and_pad
from .postprocess import postprocess_detections
from .utils import evaluating


def _prepared(images: Sequence[ImageLike], size: int) -> tuple[list[torch.Tensor], list[float],
                                                                  list[tuple[int, int]]]:
    """Each image resized and padded to ``size``: canvases, scales and original ``(H, W)``.

    An image that cannot be used (see :func:`~effnet_tutorial.data.transforms.as_chw_tensor`)
    raises ``ValueError`` or ``TypeError`` naming its position in ``images``.
    """
    canvases, scales, sizes = [], [], []
    for i, image in enumerate(images):
        try:
            x = as_chw_tensor(image)
        except (TypeError, ValueError) as err:
            raise type(err)(f"image {i}: {err}") from err
        canvas, scale = resize_and_pad(x, size)
        canvases.append(canvas)
        scales.append(scale)
        sizes.append((x.shape[-2], x.shape[-1]))
    return canvases, scales, sizes


@torch.no_grad()
def predict(model: torch.nn.Module, images: ImageLike | Sequence[ImageLike], image_size: int = 0,
            soft_nms: bool = False, score_threshold: float = 0.0,
            max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
    """Detect objects in images of any size; boxes come back **xyxy in each image's pixels**.

    Returns one dict per image: ``boxes`` ``(K, 4)``, ``scores`` ``(K,)`` and 0-based ``labels``
    ``(K,)``, best first, ``K <= max_detections``, scores below ``score_threshold`` dropped.
    ``image_size`` defaults to the model's designed input size. One image (an array or tensor)
    may be passed on its own; an empty list gives an empty list, as a loop over no images would.
    Images are uint8 or float 0-255 (see :func:`~effnet_tutorial.data.transforms.as_chw_tensor`:
    16-bit or boolean arrays are refused, not detected on as garbage).
    """
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim in (2, 3):
        images = [images]
    images = list(images)
    if not images:
        return []
    size = image_size or model.config.image_size
    device = next(model.parameters()).device
    canvases, scales, sizes = _prepared(images, size)
    batch = normalize(torch.stack(canvases)).to(device)
    with evaluating(model):
        cls_out, box_out = model(batch)
    detections = postprocess_detections(
        cls_out, box_out, anchors_for(model, (size, size)).to(device), model.num_classes,
        max_detections=max_detections, soft_nms=soft_nms,
        image_scales=torch.tensor(scales, device=device),
        image_sizes=torch.tensor(sizes, device=device))
    return [{k: v[d["scores"] >= score_threshold].cpu() for k, v in d.items()} for d in detections]
