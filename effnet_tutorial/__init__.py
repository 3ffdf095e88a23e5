"""effnet_tutorial: EfficientNet and EfficientDet built from scratch, the package behind the book.

The names most readers need are importable from the top level::

    import effnet_tutorial as et
    model = et.create_model("efficientnet_b0")
    et.count_parameters(model), et.count_flops(model, 224)

Modules, from the math up (each imports only those before it):
``layers`` -> ``blocks`` -> ``efficientnet`` -> ``bifpn`` -> ``efficientdet`` -> ``factory``;
``counting``, ``weights``, ``checkpoints``, ``utils``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import bifpn, blocks, counting, efficientdet, efficientnet, layers, utils, weights  # noqa: E402
from .blocks import MBConv, SqueezeExcite  # noqa: E402
from .counting import count_flops, count_parameters, flop_breakdown  # noqa: E402
from .efficientdet import EfficientDet  # noqa: E402
from .efficientnet import EfficientNet  # noqa: E402
from .factory import create_model, list_models  # noqa: E402
from .utils import environment_line, smoke_run, try_gpu  # noqa: E402

__all__ = [
    "EfficientDet", "EfficientNet", "MBConv", "bifpn", "efficientdet", "SqueezeExcite", "blocks", "count_flops", "count_parameters",
    "counting", "create_model", "efficientnet", "environment_line", "flop_breakdown", "layers",
    "list_models", "smoke_run", "try_gpu", "utils", "weights",
]
