"""Classifying a photo with an ImageNet-trained EfficientNet: the model's own preprocessing, the
1000 class names, the top-k predictions.

The preprocessing is the reference's evaluation path (tensorflow/tpu, ``efficientnet/
preprocessing.py``): take the central square whose side is ``size / (size + 32)`` of the image's
shorter side, resize it to ``size`` x ``size`` (bicubic), subtract the mean and divide by the
standard deviation. EfficientNet-B* uses ImageNet's RGB statistics; EfficientNet-Lite uses 127 and
128 for every channel (an "inception-style" range of about -1 to 1, which quantises better).

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from .efficientnet import native_resolution
from .extras import require
from .utils import evaluating

#: The reference's crop margin, a ``size`` crop is taken from a ``size + 32`` square.
CROP_PADDING = 32


@dataclass(frozen=True)
class Preprocessing:
    """How a trained classifier wants its input: side length and per-channel mean and std (0-255).

    ``crop=False`` resizes the whole image to a square instead of taking the reference's central
    crop (the aspect ratio changes, but nothing at the edges is lost).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool = True

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """An RGB image (``uint8`` array ``(H, W, 3)`` or PIL image) -> a ``(3, size, size)`` tensor."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if self.crop:
            w, h = image.size
            side = int(self.size / (self.size + CROP_PADDING) * min(h, w))
            top, left = (h - side + 1) // 2, (w - side + 1) // 2
            image = image.crop((left, top, left + side, top + side))
        image = image.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)  # (3, size, size)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


#: ImageNet's RGB statistics on the 0-255 scale (EfficientNet-B*).
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: EfficientNet-Lite's (``efficientnet_lite_builder.py``: ``MEAN_RGB``, ``STDDEV_RGB``).
LITE_MEAN_255 = (127.0, 127.0, 127.0)
LITE_STD_255 = (128.0, 128.0, 128.0)


def preprocessing_for(name: str) -> Preprocessing:
    """The evaluation preprocessing of classifier ``name`` (e.g. ``"tf_efficientnet_lite0"``)."""
    variant = name.rsplit("efficientnet_", 1)[-1]
    if "lite" in variant:
        return Preprocessing(native_resolution(variant), LITE_MEAN_255, LITE_STD_255)
    return Preprocessing(native_resolution(variant), IMAGENET_MEAN_255, IMAGENET_STD_255)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the models' output order (from torchvision, offline)."""
    require("torchvision", purpose="The ImageNet class names")
    from torchvision.models import EfficientNet_B0_Weights

    return tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


@torch.no_grad()
def classify(model: torch.nn.Module, image: np.ndarray | Image.Image, name: str,
             k: int = 5, crop: bool = True) -> list[tuple[str, float]]:
    """The top-``k`` ImageNet classes of ``image`` under ``model`` (built as ``name``), with
    their softmax probabilities, most probable first. ``crop=False``: see :class:`Preprocessing`.

    >>> model = create_model("tf_efficientnet_lite0", pretrained=True)  # doctest: +SKIP
    >>> classify(model, load_photo("grace_hopper"), "tf_efficientnet_lite0", k=1)  # doctest: +SKIP
    [('academic gown', 0.24...)]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = replace(preprocessing_for(name), crop=crop)(image).unsqueeze(0)  # (1, 3, size, size)
    with evaluating(model):
        probs = model(x.to(next(model.parameters()).device)).softmax(-1)[0].cpu()
    if probs.numel() != 1000:
        raise ValueError(f"the model has {probs.numel()} outputs, not ImageNet's 1000 classes")
    names = imagenet_classes()
    top = probs.topk(k)
    return [(names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]


__all__ = ["CROP_PADDING", "IMAGENET_MEAN_255", "IMAGENET_STD_255", "LITE_MEAN_255", "LITE_STD_255",
           "Preprocessing", "classify", "imagenet_classes", "preprocessing_for"]
