"""``create_model``: every model of the book by the name timm and effdet give it.

Introduced in Chapter 4, *EfficientNet-B0 and its family*.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

from torch import nn

from .efficientnet import PRESETS, EfficientNet, efficientnet


def _efficientnet_builder(variant: str, tf_style: bool) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **options) -> nn.Module:
        return efficientnet(variant, tf_style=tf_style, num_classes=num_classes, **options)

    build.__doc__ = f"{'TF-faithful ' if tf_style else ''}EfficientNet-{variant.upper()}."
    return build


_MODELS: dict[str, tuple[Callable[..., nn.Module], set[str]]] = {}
_EFFICIENTNET_OPTIONS = set(inspect.signature(EfficientNet.__init__).parameters) - {"self", "num_classes"}
for _v in PRESETS:
    _MODELS[f"efficientnet_{_v}"] = (_efficientnet_builder(_v, False), _EFFICIENTNET_OPTIONS)
    _MODELS[f"tf_efficientnet_{_v}"] = (_efficientnet_builder(_v, True), _EFFICIENTNET_OPTIONS)


def list_models() -> list[str]:
    """Every name :func:`create_model` accepts.

    Introduced in Chapter 4, *EfficientNet-B0 and its family*.
    """
    return sorted(_MODELS)


def create_model(name: str, num_classes: Optional[int] = None, **options) -> nn.Module:
    """Build a model of the book by name, with random weights.

    Names follow timm: ``efficientnet_b0`` ... ``efficientnet_b8``, ``efficientnet_l2`` (PyTorch
    style: symmetric padding, BN eps 1e-5) and ``tf_efficientnet_b0`` ... (TF-faithful: "same"
    padding, BN eps 1e-3). ``num_classes`` defaults to 1000; ``options`` are keyword arguments
    of :class:`~effnet_tutorial.efficientnet.EfficientNet` (for example ``drop_path_rate=0.1`` or
    ``features_only=True``).

    >>> model = create_model("efficientnet_b0")
    >>> count_parameters(model)  # doctest: +SKIP
    5288548

    Introduced in Chapter 4, *EfficientNet-B0 and its family*.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(list_models())}")
    builder, allowed = _MODELS[name]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {name!r}; valid options: {', '.join(sorted(allowed))}"
        )
    if num_classes is not None:
        options["num_classes"] = num_classes
    return builder(**options)
