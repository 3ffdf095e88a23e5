"""Real photographs that installed packages carry, for trying trained models without internet.

matplotlib ships one photograph (Grace Hopper in uniform); scikit-image ships several more (a
cat, a cup of coffee, an astronaut, a rocket, a motorcycle). Nothing is downloaded: a photo is
found inside the installed package, or :func:`photo_path` says what to install.

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from ..extras import MissingDependency

#: name -> (package that carries it, path inside the package, what it shows)
PHOTOS: dict[str, tuple[str, str, str]] = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                     "Rear Admiral Grace Hopper in uniform"),
    "chelsea": ("skimage", "data/chelsea.png", "a tabby cat"),
    "coffee": ("skimage", "data/coffee.png", "a cup of coffee on a saucer"),
    "astronaut": ("skimage", "data/astronaut.png", "astronaut Eileen Collins"),
    "rocket": ("skimage", "data/rocket.jpg", "a rocket on its launch pad"),
    "motorcycle": ("skimage", "data/motorcycle_left.png", "a motorcycle"),
}

_DISTRIBUTION = {"matplotlib": "matplotlib", "skimage": "scikit-image"}


def photo_path(name: str) -> Path:
    """The file of photo ``name`` inside its installed package.

    Raises ``ValueError`` for an unknown name and :class:`~effnet_tutorial.extras.MissingDependency`
    (with what to install) when the package that carries it is not installed.
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; photos: {', '.join(PHOTOS)}")
    package, inner, _ = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the photo {name!r} comes with {_DISTRIBUTION[package]}: "
                                f"pip install {_DISTRIBUTION[package]} (or the [photos] extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this {_DISTRIBUTION[package]} installation")
    return path


def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` as an RGB ``uint8`` array ``(H, W, 3)``."""
    with Image.open(photo_path(name)) as image:
        return np.asarray(image.convert("RGB"))


def available_photos() -> list[str]:
    """The photos this installation can load (those whose package is installed)."""
    found = []
    for name in PHOTOS:
        try:
            photo_path(name)
        except (MissingDependency, FileNotFoundError):
            continue
        found.append(name)
    return found


__all__ = ["PHOTOS", "available_photos", "load_photo", "photo_path"]
