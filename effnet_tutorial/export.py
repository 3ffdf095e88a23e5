"""ONNX export of EfficientNet and EfficientDet, checked against PyTorch with onnxruntime.

Two things make these models awkward to export, and both are handled here:

* **Dynamic "same" padding.** :class:`~effnet_tutorial.layers.Conv2dSame` and the BiFPN's
  ``"same"`` max-pools compute their padding from the input size in ``forward`` (TensorFlow's
  SAME rule). A tracing exporter records either a chain of ``Shape``/``Gather``/arithmetic nodes
  or, once Python's ``math.ceil`` has turned the sizes into plain ints, constants with a
  ``TracerWarning``. :func:`static_padding_copy` removes the question: it runs the model once at
  the export size, records every padding, and returns a copy whose convolutions and pools use
  those fixed pads (a ``Pad`` node of constants, or the convolution's own ``pads`` when the
  padding is symmetric). The graph is then exact for that input size, and only for it.
* **NMS.** Post-processing (top-k over all anchors, per-class NMS, 100 detections) is a
  data-dependent loop with a variable number of outputs; ONNX's ``NonMaxSuppression`` differs in
  its semantics (no per-class batching by label offset, ``>=`` vs ``>``, output layout) and
  runtime support. The graph therefore ends at the raw per-level class and box tensors, and
  :func:`~effnet_tutorial.postprocess.postprocess_detections` runs on their outputs.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .bifpn import Resample
from .extras import require
from .layers import Conv2dSame, same_padding
from .utils import evaluating

ImageSize = int | Sequence[int]


def _hw(image_size: ImageSize) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


class StaticPadConv2d(nn.Conv2d):
    """A convolution with fixed ``(left, right, top, bottom)`` zero padding, for export.

    Symmetric pads go into the convolution itself (one ``Conv`` node); asymmetric ones (SAME on
    even inputs pads ``(0, 1)``) become one constant ``Pad`` node in front of it. Built from a
    convolution whose weights it shares (:meth:`from_conv`).
    """

    pads: tuple[int, int, int, int] | None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> "StaticPadConv2d":
        """Wrap ``conv``'s weights with the fixed ``pads``."""
        left, right, top, bottom = pads
        symmetric = left == right and top == bottom
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  (top, left) if symmetric else 0, conv.dilation, conv.groups,
                  bias=conv.bias is not None, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        new.pads = None if symmetric else tuple(pads)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.pads is not None:
            x = F.pad(x, self.pads)
        return super().forward(x)


class StaticResample(nn.Module):
    """:class:`~effnet_tutorial.bifpn.Resample` for one fixed input and output size.

    The "same" max-pool's ``-inf`` padding becomes a constant ``Pad`` node (``-inf`` so padding
    never wins the max), the upsampling a ``Resize`` by a constant factor (or to a fixed size
    when the sizes are not multiples).
    """

    def __init__(self, resample: Resample, in_hw: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        self.conv, self.bn = resample.conv, resample.bn
        h, w = in_hw
        self.size = tuple(int(s) for s in size)
        self.mode, self.pads, self.kernel, self.stride, self.padding = "none", None, 1, 1, 0
        self.scale: tuple[float, float] | None = None
        if h > size[0] and w > size[1]:
            self.mode = "pool"
            self.stride = (h - 1) // size[0] + 1
            self.kernel = self.stride + 1
            if resample.padding == "same":
                top, bottom = same_padding(h, self.kernel, self.stride)
                left, right = same_padding(w, self.kernel, self.stride)
                self.pads = (left, right, top, bottom)
            else:
                self.padding = ((self.stride - 1) + (self.kernel - 1)) // 2
        elif h < size[0] or w < size[1]:
            self.mode = "up"
            # An integer factor exports as a Resize with constant scales; a target size would
            # make the exporter read the input's shape (Shape -> Slice -> Concat -> Resize).
            if size[0] % h == 0 and size[1] % w == 0:
                self.scale = (float(size[0] // h), float(size[1] // w))

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:  # noqa: D102
        if self.conv is not None:
            x = self.bn(self.conv(x))
        if self.mode == "pool":
            if self.pads is not None:
                x = F.pad(x, self.pads, value=float("-inf"))
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)
        if self.mode == "up":
            if self.scale is not None:
                return F.interpolate(x, scale_factor=self.scale, mode="nearest")
            return F.interpolate(x, size=self.size, mode="nearest")
        return x


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


@torch.no_grad()
def static_padding_copy(model: nn.Module, image_size: ImageSize, batch_size: int = 1) -> nn.Module:
    """An eval-mode copy of ``model`` whose "same" paddings are fixed for ``image_size``.

    Runs the model once at ``(batch_size, 3, H, W)``, records the input size of every
    :class:`~effnet_tutorial.layers.Conv2dSame` and BiFPN :class:`~effnet_tutorial.bifpn.Resample`,
    and swaps them for :class:`StaticPadConv2d` and :class:`StaticResample`. Same weights, same
    outputs at that size; the original model is untouched.
    """
    h, w = _hw(image_size)
    model = copy.deepcopy(model).eval()
    seen: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, Conv2dSame):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(name, tuple(args[0].shape[-2:]))))
        elif isinstance(m, Resample):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(
                    name, (tuple(args[0].shape[-2:]), tuple(args[1])))))
    try:
        model(torch.zeros(batch_size, getattr(model, "in_channels", 3), h, w))
    finally:
        for hook in hooks:
            hook.remove()
    for name, m in list(model.named_modules()):
        if name not in seen:
            continue
        if isinstance(m, Conv2dSame):
            ih, iw = seen[name]
            top, bottom = same_padding(ih, m.kernel_size[0], m.stride[0], m.dilation[0])
            left, right = same_padding(iw, m.kernel_size[1], m.stride[1], m.dilation[1])
            _set_module(model, name, StaticPadConv2d.from_conv(m, (left, right, top, bottom)))
        elif isinstance(m, Resample):
            in_hw, size = seen[name]
            _set_module(model, name, StaticResample(m, in_hw, size))
    return model


class _FlatOutputs(nn.Module):
    """Wrap a detector so that it returns a flat tuple: class P3..P7, then box P3..P7."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):  # noqa: D102
        cls_out, box_out = self.model(x)
        return tuple(cls_out) + tuple(box_out)


def output_names(model: nn.Module) -> list[str]:
    """ONNX output names: ``["logits"]`` for a classifier, ``class_p3 ... box_p7`` for a detector."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "min_level"):
        return ["logits"]
    levels = range(config.min_level, config.max_level + 1)
    return [f"class_p{lv}" for lv in levels] + [f"box_p{lv}" for lv in levels]


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: ImageSize,
                batch_size: int = 1, opset: int = 17) -> str:
    """Export ``model`` to ONNX at a fixed input size; returns the path.

    Classifiers export ``input -> logits``; detectors export ``images -> class_p3 ... class_p7,
    box_p3 ... box_p7`` (raw logits and box codes, NMS left out: see the module docstring).
    "Same" padding becomes static padding for ``image_size`` (:func:`static_padding_copy`), so
    the graph holds no shape arithmetic; feed it exactly ``(batch_size, 3, H, W)``.
    Uses the TorchScript-based exporter (``dynamo=False``), which needs only ``onnx``.
    """
    require("onnx", purpose="ONNX export")
    h, w = _hw(image_size)
    static = static_padding_copy(model, (h, w), batch_size)
    names = output_names(model)
    wrapped = _FlatOutputs(static) if len(names) > 1 else static
    x = torch.zeros(batch_size, 3, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript exporter
        torch.onnx.export(wrapped, (x,), str(path), input_names=["images"], output_names=names,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    return str(path)


@torch.no_grad()
def check_onnx(model: nn.Module, path: str | os.PathLike, image_size: ImageSize,
               batch_size: int = 1, seed: int = 0) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch, relative to the output scale.

    Feeds the same seeded random batch to ``model`` (eval mode, on CPU) and to the ONNX file,
    and returns ``max |onnx - torch| / max |torch|`` over all outputs. Below ``1e-4`` means
    the export is faithful to float32 rounding.
    """
    require("onnxruntime", purpose="Checking an ONNX file")
    import onnxruntime as ort

    h, w = _hw(image_size)
    x = torch.randn(batch_size, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with evaluating(model):
        ref = model(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref[0]) + list(ref[1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if len(got) != len(ref):
        raise ValueError(f"the ONNX file has {len(got)} outputs, the model {len(ref)}")
    scale = max(float(r.abs().max()) for r in ref) or 1.0
    diff = max(float((torch.from_numpy(g) - r).abs().max()) for g, r in zip(got, ref))
    return diff / scale


__all__ = ["StaticPadConv2d", "StaticResample", "check_onnx", "export_onnx", "output_names",
           "static_padding_copy"]
