"""Checkpoint files: the released effdet weights (downloaded, hash-checked), this package's own
files, and the description that makes a trained detector rebuildable from its file alone.

The released EfficientDet checkpoints are effdet's; their file names end in the first hex digits
of the file's SHA-256 (``tf_efficientdet_d0_34-f153e0cf.pth``), which the download checks before
anything is unpickled. Every file is read with ``torch.load(weights_only=True)``, which cannot
run code: the trainer's checkpoints hold only tensors, numbers, strings, lists and dicts.

A checkpoint written by :class:`~effnet_tutorial.train.Trainer` carries a ``"meta"`` entry
(:func:`describe_model` plus the run's settings): the model's name and options, its input size,
class count and class names. :func:`load_trained` builds the model from that description, so a
64-pixel, 4-class model is evaluated at 64 pixels with its 4 class names, and an argument that
contradicts the file is an error rather than a silent re-interpretation. Fine-tuning is the one
place where another class count is asked for on purpose: ``create_model(name, num_classes=K,
checkpoint_path=...)`` re-initialises the class head (with the prior bias), keeps everything else,
and warns.

In the book: Chapter 12, *EfficientDet D0–D7*.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch

from .efficientdet import (
    DETECTOR_PRESETS,
    DetectionHead,
    DetectorConfig,
    EfficientDet,
    efficientdet,
    reset_head,
)
from .efficientnet import LITE_PRESETS, PRESETS
from .weights import from_effdet

#: The version of the ``"meta"`` entry this package writes (and the newest it reads).
FORMAT_VERSION = 1

#: The key of the class predictor's bias, whose length is anchors x classes.
_CLASS_BIAS = "class_head.predict.pointwise.bias"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint, or that contradicts what was asked of it; the
    message names the file and says what to do."""


def download_checkpoint(url: str, model_dir: str | None = None) -> Mapping[str, torch.Tensor]:
    """Download ``url`` once into ``model_dir`` (torch hub's cache by default), check its hash and
    load it with ``weights_only=True``.

    Raises ``RuntimeError`` saying what to do when there is no network.
    """
    if not url:
        raise ValueError("this model has no released checkpoint; train it or pass checkpoint_path=")
    folder = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"
    if not (folder / url.rsplit("/", 1)[-1]).is_file():
        # torch hub would print the full cache path; say only what is fetched
        print(f"downloading {url.rsplit('/', 1)[-1]} (once: it is kept in torch hub's cache)",
              file=sys.stderr)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return torch.hub.load_state_dict_from_url(url, model_dir=model_dir,
                                                      map_location="cpu", check_hash=True,
                                                      weights_only=True, progress=False)
    except OSError as err:  # URLError is an OSError
        raise RuntimeError(
            f"could not download {url} ({err}). Without internet, download the file elsewhere "
            "and pass checkpoint_path=<file>."
        ) from err


def _looks_like_text(head: bytes) -> bool:
    """True for the first bytes of a text file (a checkpoint is a zip archive or a pickle)."""
    if not head or head.startswith((b"PK", b"\x80")):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Mapping[str, Any]:
    """Read a checkpoint file with ``torch.load(weights_only=True)``; every way it can fail is a
    :class:`CheckpointError` (or ``FileNotFoundError``) that names the file and says why.

    Accepted: this package's training checkpoints and model files, and plain state dicts in this
    package's naming or effdet's.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file in it (last.pth or "
                              "model.pth for this package's runs)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint, or one whose "
                              "writing was cut off; use another copy")
    if _looks_like_text(head):
        raise CheckpointError(f"{path} is a text file, not a checkpoint (a .pth written by "
                              "torch.save is a zip archive)")
    try:
        with warnings.catch_warnings():  # torch's note on pickles of another protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors, numbers and strings, which "
            "torch.load(weights_only=True) does not unpickle (that can run code): it is not a "
            "checkpoint of effdet or of this package's trainer (a last.pth written before "
            "checkpoints carried a 'meta' entry is such a file). If you trust it, load it with "
            "torch.load(path, weights_only=False) and pass the state dict") from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path} is truncated or corrupted ({str(err).split('. ')[0][:160]}); it was "
            "probably cut off while being written or copied: use another copy") from err
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint (a dict "
                              "of tensors, or a training checkpoint with a 'model' entry)")
    return state


def checkpoint_meta(state: Mapping[str, Any]) -> dict | None:
    """The ``"meta"`` entry of a checkpoint of this package (``None`` for other files)."""
    meta = state.get("meta")
    if not isinstance(meta, Mapping):
        return None
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"the checkpoint's format version {meta['format_version']} is newer "
                              f"than this package reads ({FORMAT_VERSION}); update effnet_tutorial")
    return dict(meta)


def _preset_name(config: DetectorConfig) -> str:
    """The preset that ``config`` differs from in the fewest fields."""
    def distance(name: str) -> int:
        preset = DETECTOR_PRESETS[name]
        return sum(getattr(config, f.name) != getattr(preset, f.name) for f in fields(config)
                   if f.name not in ("url", "image_size"))
    return min(DETECTOR_PRESETS, key=distance)


def describe_model(model: torch.nn.Module) -> dict:
    """What rebuilds ``model`` (random weights): ``{"model", "model_options", "image_size",
    "num_classes"}``, with ``model_options`` the fields of its
    :class:`~effnet_tutorial.efficientdet.DetectorConfig` that differ from the named preset.

    The name is the one :func:`~effnet_tutorial.factory.create_model` built it under, else the
    closest preset; for a model that is not this package's detector, name and options are None.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, DetectorConfig):
        return {"model": None, "model_options": None, "image_size": None,
                "num_classes": getattr(model, "num_classes", None)}
    name = getattr(model, "model_name", None)
    name = name if name in DETECTOR_PRESETS else _preset_name(config)
    preset = DETECTOR_PRESETS[name]
    options = {f.name: getattr(config, f.name) for f in fields(config)
               if f.name not in ("url", "image_size")
               and getattr(config, f.name) != getattr(preset, f.name)}
    return {"model": name, "model_options": options, "image_size": int(config.image_size),
            "num_classes": int(model.num_classes)}


def require_detector(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a detector, saying what it is and which names are."""
    if name in DETECTOR_PRESETS:
        return
    detectors = ", ".join(sorted(DETECTOR_PRESETS))
    classifiers = {f"{tf}efficientnet_{v}" for v in (*PRESETS, *LITE_PRESETS) for tf in ("", "tf_")}
    what = "an image classifier (EfficientNet)" if name in classifiers else "not a model name"
    raise ValueError(f"{name!r} is {what}; this needs a detector: {detectors}")


def _unwrap(obj: Mapping[str, Any], use_ema: bool = True) -> Mapping[str, torch.Tensor]:
    """The state dict inside a raw state dict, a model file ({"model": ...}) or a training
    checkpoint (its EMA weights when ``use_ema`` and it has them, else its "model" entry)."""
    if use_ema and isinstance(obj.get("ema"), Mapping):
        return obj["ema"]
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError("the checkpoint holds no state dict (expected tensors, or a 'model' entry)")


def detector_state(obj: Mapping[str, Any], use_ema: bool = True) -> Mapping[str, torch.Tensor]:
    """The detector's weights in a checkpoint, in this package's naming (effdet's converted)."""
    state = _unwrap(obj, use_ema)
    return from_effdet(state) if any(k.startswith("class_net.") for k in state) else state


def _check_same_architecture(model: EfficientDet, meta: dict, path: Path) -> None:
    """Raise if ``meta`` describes another architecture than ``model`` (the class count and the
    input size may differ: that is fine-tuning)."""
    mine = describe_model(model)
    theirs = (meta.get("model"), meta.get("model_options") or {})
    if (mine["model"], mine["model_options"]) != theirs:
        raise CheckpointError(
            f"{path} holds a {theirs[0]} with options {theirs[1]}, not a {mine['model']} with "
            f"options {mine['model_options']}: build it with "
            f"effnet_tutorial.checkpoints.load_trained({str(path)!r})")


def load_detector_weights(model: EfficientDet,
                          source: str | os.PathLike | Mapping[str, torch.Tensor]) -> EfficientDet:
    """Load a checkpoint (a path, or a state dict in this package's or effdet's naming; a training
    checkpoint gives its EMA weights) into ``model``.

    Everything must match except, possibly, the class head: when its class count differs from the
    model's, the class head is re-initialised with the prior bias and a warning says so (the start
    of fine-tuning). A checkpoint of this package that describes another architecture is an error.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        source = read_checkpoint(path)
        meta = checkpoint_meta(source)
        if meta is not None:
            _check_same_architecture(model, meta, path)
    state = detector_state(source)
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


def _classes_in(state: Mapping[str, torch.Tensor], name: str) -> int | None:
    """The class count of a state dict's class head, for the anchors of detector ``name``."""
    bias = state.get(_CLASS_BIAS)
    anchors = DETECTOR_PRESETS[name].num_anchors
    if bias is None or bias.numel() % anchors:
        return None
    return bias.numel() // anchors


def _contradiction(path: Path, what: str, theirs: object, asked: object,
                   hint: str) -> CheckpointError:
    """The error for an explicit argument that the checkpoint's description contradicts."""
    return CheckpointError(f"{path} holds a model with {what} {theirs}, but {asked} was asked "
                           f"for; {hint}")


def load_trained(checkpoint: str | os.PathLike, model_name: str | None = None,
                 image_size: int | None = None, num_classes: int | None = None,
                 use_ema: bool = True) -> EfficientDet:
    """The detector a checkpoint holds, built as its ``"meta"`` describes it, in eval mode.

    ``checkpoint``: this package's training checkpoint (``last.pth``: the EMA weights unless
    ``use_ema=False``) or model file (``model.pth``), or a plain state dict (ours or effdet's).
    The model's name, options, input size and class count come from the file; ``model_name``,
    ``image_size`` and ``num_classes`` are only needed for a plain state dict (whose class count
    is read off its class head). An explicit ``image_size`` overrides the file's (evaluating at
    another size is a legitimate experiment); an explicit ``model_name`` or ``num_classes`` that
    contradicts the file is a :class:`CheckpointError` (fine-tuning to another class count is
    ``create_model(name, num_classes=K, checkpoint_path=...)``). The model's ``class_names`` and
    ``model_name`` attributes hold the file's class names (``None`` if it has none) and its name.
    """
    path = Path(checkpoint)
    if image_size is not None and image_size <= 0:
        raise ValueError(f"image_size must be > 0, got {image_size}")
    if model_name is not None:
        require_detector(model_name)
    state = read_checkpoint(path)
    meta = checkpoint_meta(state)
    try:
        weights = detector_state(state, use_ema)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if meta is not None and meta.get("model"):
        name, options, classes = meta["model"], dict(meta.get("model_options") or {}), \
            int(meta["num_classes"])
        if model_name is not None and model_name != name:
            raise _contradiction(path, "name", name, model_name,
                                 f"leave the model name out (or pass {name})")
        size = image_size or int(meta["image_size"])
    else:
        if model_name is None:
            raise CheckpointError(
                f"{path} holds bare weights without a description of the model (not a file of "
                "this package's trainer); pass the model name (--model) and, if it was trained "
                "at another input size than the model's, the size (--image-size)")
        name, options = model_name, {}
        classes = _classes_in(weights, name)
        if classes is None:
            raise CheckpointError(f"{path} has no class head of a {name} ({_CLASS_BIAS} missing "
                                  "or of the wrong shape): is it a detector's checkpoint?")
        size = image_size or DETECTOR_PRESETS[name].image_size
    if num_classes is not None and num_classes != classes:
        raise _contradiction(path, "class count", classes, num_classes,
                             "to fine-tune to another class count use create_model(name, "
                             "num_classes=K, checkpoint_path=...)")
    model = efficientdet(name, num_classes=classes, image_size=size, **options)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"{path} does not fit a {name} with {classes} classes: {detail}. "
                              "Was it saved from another model? Pass the right --model") from err
    model.model_name = name
    model.class_names = list(meta["class_names"]) if meta and meta.get("class_names") else None
    return model.eval()


#: Detectors the book trains and the package ships (``effnet_tutorial/trained/``), so that a
#: chapter before the training chapter, or a reader without the time to train, can look at a
#: trained detector: name -> (file, what it is).
BOOK_DETECTORS: dict[str, tuple[str, str]] = {
    "d0_shapes_256": ("d0_shapes_256.pth",
                      "efficientdet_d0 trained from scratch by Chapter 14 on the CPU "
                      "(recipes.CPU_SHAPES: synthetic shapes at 256 pixels, 4 classes, 30 minutes "
                      "of CPU time); its EMA weights, stored in float16"),
}

TRAINED = Path(__file__).resolve().parent / "trained"


def book_detector(name: str = "d0_shapes_256") -> EfficientDet:
    """A detector the book trained, shipped with the package (:data:`BOOK_DETECTORS`), in eval
    mode with its class names; no download, no training."""
    if name not in BOOK_DETECTORS:
        raise KeyError(f"no shipped detector {name!r}; there are: {', '.join(BOOK_DETECTORS)}")
    return load_trained(TRAINED / BOOK_DETECTORS[name][0])


def write_half_precision(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write a model file's weights in float16 with its description (half the size, for
    shipping); :func:`load_trained` reads it back into a float32 model.

    ``source``: a model file or training checkpoint of this package (the EMA weights of a
    checkpoint). ``target`` must not exist: nothing is overwritten.
    """
    source, target = Path(source), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it first if it is to be replaced")
    state = read_checkpoint(source)
    meta = checkpoint_meta(state)
    if meta is None:
        raise CheckpointError(f"{source} has no description of its model (\"meta\"): write it "
                              "with this package's trainer")
    weights = {k: v.half() if v.is_floating_point() else v for k, v in detector_state(state).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "meta": meta}, target)
    return target


__all__ = ["BOOK_DETECTORS", "CheckpointError", "DetectionHead", "FORMAT_VERSION", "book_detector",
           "checkpoint_meta", "describe_model", "detector_state", "download_checkpoint",
           "load_detector_weights", "load_trained", "read_checkpoint", "require_detector",
           "write_half_precision"]
