"""Loading detector weights: released effdet checkpoints (downloaded, hash-checked) and local files.

The released EfficientDet checkpoints are effdet's; their file names end in the first hex digits
of the file's SHA-256 (``tf_efficientdet_d0_34-f153e0cf.pth``), which the download checks before
anything is unpickled, and the file is read with ``torch.load(weights_only=True)``, which cannot
run code. A checkpoint for COCO's 90 classes loads into a model with another class count by
re-initialising the class head (with the prior bias) and keeping everything else: the usual
start of fine-tuning.

In the book: Chapter 12, *EfficientDet D0–D7*.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .efficientdet import DetectionHead, EfficientDet, reset_head
from .weights import from_effdet


def download_checkpoint(url: str, model_dir: str | None = None) -> Mapping[str, torch.Tensor]:
    """Download ``url`` once into ``model_dir`` (torch hub's cache by default), check its hash and
    load it with ``weights_only=True``.

    Raises ``RuntimeError`` saying what to do when there is no network.
    """
    if not url:
        raise ValueError("this model has no released checkpoint; train it or pass checkpoint_path=")
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, map_location="cpu",
                                                  check_hash=True, weights_only=True, progress=False)
    except OSError as err:  # URLError is an OSError
        raise RuntimeError(
            f"could not download {url} ({err}). Without internet, download the file elsewhere "
            "and pass checkpoint_path=<file>."
        ) from err


def _unwrap(obj: object) -> Mapping[str, torch.Tensor]:
    """The state dict inside a raw state dict or a training checkpoint ({"model": ...})."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            return obj[key]
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError("the checkpoint holds no state dict (expected tensors, or a 'model' entry)")


def load_detector_weights(model: EfficientDet,
                          source: str | os.PathLike | Mapping[str, torch.Tensor]) -> EfficientDet:
    """Load a checkpoint (a path, or a state dict in this package's or effdet's naming) into ``model``.

    Everything must match except, possibly, the class head: when its class count differs from the
    model's, the class head is re-initialised with the prior bias and a warning says so.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        source = torch.load(path, map_location="cpu", weights_only=True)
    state = _unwrap(source)
    if any(k.startswith("class_net.") for k in state):
        state = from_effdet(state)
    own = model.state_dict()
    head_keys = [k for k in state if k.startswith("class_head.")]
    mismatched = [k for k in head_keys if k in own and state[k].shape != own[k].shape]
    if mismatched:
        state = {k: v for k, v in state.items() if not k.startswith("class_head.")}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("class_head.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"checkpoint does not fit this model: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]}")
        reset_head(model.class_head, prior=True)
        warnings.warn(f"class head re-initialised for {model.num_classes} classes "
                      "(the checkpoint has another class count); everything else is loaded",
                      stacklevel=2)
    else:
        model.load_state_dict(state, strict=True)
    return model


__all__ = ["DetectionHead", "download_checkpoint", "load_detector_weights"]
