"""effnet_tutorial: EfficientNet and EfficientDet built from scratch, the package behind the book.

The names most readers need are importable from the top level::

    import effnet_tutorial as et
    model = et.create_model("efficientnet_b0")
    et.count_parameters(model), et.count_flops(model, 224)

Modules, listed so that each imports only modules listed before it (``tests/test_imports.py``
checks this):

* foundations: ``utils``, ``extras`` (the optional dependencies), ``runs`` (a training run's
  folder: atomic saves, the lock, resumes), ``weights`` (checkpoint conversion), ``layers``,
  ``fast`` (the fast kernels behind one switch, and opt-in model transforms), ``data``
  (datasets, transforms, preprocessing), ``viz``, ``finetune``;
* Part I, EfficientNet: ``blocks``, ``efficientnet``, ``counting``, ``pretrained``, ``imagenet``;
* Part II, compound scaling: ``schedules``, ``classify``, ``intervals`` (confidence intervals over
  seeds), ``scaling``, ``footprint`` (activation memory and latency), ``explorer``, ``scaled_yolo``
  (Scaled-YOLOv4's cost analysis), ``yolo_blocks`` (the Darknet, CSP, SPP and partial blocks),
  ``yolo_models`` (YOLOv4-CSP, -P5/P6/P7 and -tiny from their layouts);
* Part III, EfficientDet: ``bifpn``, ``anchors``, ``losses``, ``postprocess``, ``inference``,
  ``efficientdet``, ``checkpoints``, ``factory``;
* Part IV, training: ``train``, ``evaluate``, ``coco_ap`` (COCO's AP written out by hand),
  ``detection_errors`` (each detection judged against the ground truth), ``estimates`` (a run's
  cost before it runs), ``recipes``, ``cli``;
* the appendix: ``export``, ``benchmark`` (against timm and effdet).
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import (  # noqa: E402
    anchors, bifpn, blocks, checkpoints, counting, efficientdet, efficientnet, extras, inference,
    layers, losses, postprocess, utils, weights,
)
from .anchors import box_iou, decode_boxes, encode_boxes, generate_anchors  # noqa: E402
from .blocks import MBConv, SqueezeExcite  # noqa: E402
from .counting import count_flops, count_parameters, flop_breakdown  # noqa: E402
from .efficientdet import EfficientDet  # noqa: E402
from .efficientnet import EfficientNet  # noqa: E402
from .factory import create_model, list_models  # noqa: E402
from .losses import detection_loss, focal_loss  # noqa: E402
from .postprocess import batched_nms, postprocess_detections  # noqa: E402
from .utils import environment_line, glue, smoke_run, try_gpu  # noqa: E402

__all__ = [
    "anchors", "batched_nms", "bifpn", "blocks", "box_iou", "checkpoints", "count_flops",
    "count_parameters", "counting", "create_model", "decode_boxes", "detection_loss",
    "EfficientDet", "efficientdet", "EfficientNet", "efficientnet", "encode_boxes",
    "environment_line", "extras", "flop_breakdown", "focal_loss", "generate_anchors", "glue",
    "inference", "layers",
    "list_models", "losses", "MBConv", "postprocess", "postprocess_detections", "smoke_run",
    "SqueezeExcite", "try_gpu", "utils", "weights",
]
