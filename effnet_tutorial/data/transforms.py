"""Preprocessing and the detection transforms that move boxes with the image.

Every image a detector sees, in training, evaluation or :func:`~effnet_tutorial.inference.predict`,
goes through :func:`resize_and_pad` and :func:`normalize` here: EfficientDet takes square inputs
(512x512 for D0), so an image is scaled until its longer side fits, pasted at the top-left and
padded with the mean colour (zero after normalisation); boxes found on that canvas times the
returned scale are boxes on the original image (effdet's ``ResizePad`` and ``img_scale``, automl's
``resize_and_crop_image``). Image files are decoded by :func:`read_rgb_image` (16-bit pixels scaled
to 8 bits, every mode converted to RGB), and :func:`as_chw_tensor` refuses what would otherwise be
detected on as garbage (uint16 or bool arrays, 0-1 floats, empty images) with advice.

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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from PIL import Image

#: ImageNet channel means and standard deviations in 0-255 pixel units (effdet, automl).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Target = dict[str, torch.Tensor]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]
ImageLike = torch.Tensor | np.ndarray


# --------------------------------------------------------------------------- image files
class ImageFileError(ValueError):
    """An image file that cannot be decoded into an RGB picture (the message names the file)."""


#: PIL modes holding 16-bit (or wider integer) pixels, 0-65535, scaled to 0-255 when read.
WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb_pixels(im: Image.Image, path: Path) -> np.ndarray:
    """A decoded PIL image as uint8 ``(H, W, 3)`` RGB (the conversions of :func:`read_rgb_image`).

    16-bit modes are scaled by hand because PIL's ``convert("RGB")`` clips them to 255; alpha is
    dropped, as torchvision's reader does.
    """
    if im.mode in WIDE_INTEGER_MODES:
        gray = np.clip(np.round(np.asarray(im, dtype=np.float64) / 257.0), 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageFileError(f"{path}: 32-bit float pixels have no fixed range; save the image "
                             "as 8-bit or 16-bit")
    return np.array(im.convert("RGB"))


def read_rgb_image(path: str | Path) -> np.ndarray:
    """The image file at ``path`` as a uint8 ``(H, W, 3)`` RGB array, whatever its pixel format.

    16-bit images are scaled from 0-65535 to 0-255 (PIL's own conversion clips them: the image
    would turn white); grayscale, palette, RGBA (alpha dropped) and other modes are converted to
    RGB; 32-bit float images, which have no agreed range, are refused. The first frame of an
    animation is used and EXIF orientation is not applied (annotations refer to the stored
    pixels). Raises ``FileNotFoundError`` for a missing file and :class:`ImageFileError` for one
    that cannot be decoded, each naming the file.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # decoding errors (a truncated file) surface here, not later
            return _rgb_pixels(im, path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageFileError):
            raise
        raise ImageFileError(f"cannot read image {path}: {err}") from err


# --------------------------------------------------------------------------- preprocessing
#: Array and tensor dtypes an image may have; anything else is refused with advice.
IMAGE_DTYPES = ("uint8", "float16", "bfloat16", "float32", "float64")


def _dtype_advice(dtype: str) -> str:
    """How to turn an image of ``dtype`` into one :func:`as_chw_tensor` accepts."""
    if dtype == "uint16":
        return "scale 16-bit pixels to 8 bits: (image / 257).round().astype(np.uint8)"
    if dtype == "bool":
        return "a mask is not an image: image.astype(np.uint8) * 255"
    if "int" in dtype:
        return "if the values are 0-255 pixels: image.astype(np.uint8)"
    return "convert it to uint8 pixels 0-255"


def _check_dtype(dtype: np.dtype | torch.dtype) -> None:
    """Refuse an image dtype other than uint8 or float, naming it and saying how to convert."""
    name = dtype.name if isinstance(dtype, np.dtype) else str(dtype).removeprefix("torch.")
    if name not in IMAGE_DTYPES:
        raise ValueError(f"an image must be uint8 or float (0-255), got dtype {name}: "
                         f"{_dtype_advice(name)}")


def _to_tensor(image: ImageLike) -> torch.Tensor:
    """A NumPy array or a tensor as a tensor, once its dtype is checked."""
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"an image must be a NumPy array or a torch tensor, got "
                        f"{type(image).__name__} (read files with read_rgb_image)")
    _check_dtype(image.dtype)
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.array(image, dtype=image.dtype.newbyteorder("=")))
    return image


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` from ``(3, H, W)``, ``(H, W, 3)``, or grayscale ``(H, W)``, ``(1, H, W)``,
    ``(H, W, 1)`` (the gray repeated in three channels)."""
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"an image must be (3, H, W), (H, W, 3) or (H, W), got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    if x.shape[0] != 3:
        raise ValueError(f"an image must have 3 channels (RGB) or 1 (gray), got shape "
                         f"{tuple(x.shape)}; for RGBA drop the alpha channel (image[..., :3])")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"an image must have at least one pixel, got shape {tuple(x.shape)}")
    return x


def _check_float_range(x: torch.Tensor) -> None:
    """Refuse float pixels that are not finite 0-255 values (0-1 and normalised images)."""
    if not torch.isfinite(x).all():
        raise ValueError("the image holds NaN or infinite pixels")
    low, high = float(x.min()), float(x.max())
    if 0 < high <= 1.0:
        raise ValueError("float images must be in 0-255 pixel units (multiply [0, 1] images "
                         "by 255)")
    if low < 0 or high > 255:
        raise ValueError(f"float images must be in 0-255 pixel units, got values from {low:g} "
                         f"to {high:g} (pass the image before normalisation, clipped to 0-255)")


def as_chw_tensor(image: ImageLike) -> torch.Tensor:
    """An image as a float32 ``(3, H, W)`` tensor in 0-255 units.

    Accepts ``(3, H, W)`` tensors and ``(H, W, 3)`` arrays or tensors (what PIL and OpenCV
    give), or grayscale ``(H, W)``; uint8, or float (float64 included) in 0-255. Other dtypes
    (uint16, int32, bool, ...), empty images and float images in 0-1 or normalised are refused
    with a message saying how to convert them, rather than detected on as garbage.
    """
    x = _channels_first(_to_tensor(image))
    if x.is_floating_point() and x.numel():
        _check_float_range(x)
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


def _resize(image: torch.Tensor, boxes: torch.Tensor,
            factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    image = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear",
                          align_corners=False)[0]
    scale = boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
    return image, boxes * scale


def _place(image: torch.Tensor, target: Target, size: int, top: int,
           left: int) -> tuple[torch.Tensor, Target]:
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
    """Training: scale jitter in ``scale_range`` times ``size``, random crop, pad (the paper's
    recipe)."""

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


def train_transforms(size: int, scale_range: tuple[float, float] = (0.1, 2.0),
                     seed: int | None = None) -> Compose:
    """The paper's training pipeline: flip, scale jitter with crop, pad, normalise."""
    rng = random.Random(seed)
    return Compose([HorizontalFlip(0.5, rng), RandomScaleCrop(size, scale_range, rng),
                    Normalize()], rng)


def eval_transforms(size: int) -> Compose:
    """Evaluation pipeline: resize-and-pad, normalise."""
    return Compose([ResizePad(size), Normalize()])


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack same-sized images; keep targets as a list (each image has its own number of boxes)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
