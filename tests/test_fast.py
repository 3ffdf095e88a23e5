"""Opt-in fast paths are numerically the models they replace (no timing asserts)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import effnet_tutorial as et
from effnet_tutorial import fast

from .helpers import max_rel_diff, randomize_


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_b0"])
def test_fuse_conv_bn_equals_model_in_eval(name):
    torch.manual_seed(0)
    model = randomize_(et.create_model(name, num_classes=10)).eval()
    fused = fast.fuse_conv_bn(model)
    bns = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert bns(fused) == 0 and bns(model) > 0  # copy fused, original untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_diff(fused(x), model(x)) < 1e-5


def test_fuse_conv_bn_on_detector_keeps_head_bns_and_outputs():
    torch.manual_seed(0)
    model = randomize_(et.create_model("tf_efficientdet_d0", num_classes=5)).eval()
    fused = fast.fuse_conv_bn(model)
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert left and all(n.startswith(("class_head.bns", "box_head.bns")) for n in left)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        (c0, b0), (c1, b1) = model(x), fused(x)
    for a, b in zip(c0 + b0, c1 + b1):
        assert max_rel_diff(b, a) < 1e-4


def test_memory_efficient_swish_matches_silu_values_and_gradients():
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(fast.memory_efficient_swish, (x,))
    x1, x2 = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    g = torch.randn_like(x)
    y1, y2 = fast.MemoryEfficientSwish()(x1), nn.SiLU()(x2)
    torch.testing.assert_close(y1, y2)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_use_memory_efficient_swish_keeps_model_gradients():
    torch.manual_seed(0)
    ref = et.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.0, dropout=0.0)
    mem = fast.use_memory_efficient_swish(et.create_model(
        "efficientnet_b0", num_classes=10, drop_path_rate=0.0, dropout=0.0))
    mem.load_state_dict(ref.state_dict())
    assert not any(isinstance(m, nn.SiLU) for m in mem.modules())
    ref, mem = ref.double(), mem.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref(x).square().sum().backward()
    mem(x).square().sum().backward()
    # compare all gradients at the scale of the largest one: some (BN biases before a BN in
    # training mode) are zero up to rounding, where a per-tensor relative error means nothing
    g_ref = torch.cat([p.grad.flatten() for p in ref.parameters()])
    g_mem = torch.cat([p.grad.flatten() for p in mem.parameters()])
    assert max_rel_diff(g_mem, g_ref) < 1e-8


def test_channels_last_keeps_outputs():
    torch.manual_seed(0)
    model = randomize_(et.create_model("tf_efficientnet_b0", num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fast.to_channels_last(model)
        assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert max_rel_diff(out, ref) < 1e-5


def test_optimize_for_inference_and_autocast_on_cpu():
    """The GPU recipe (fused, NHWC, mixed precision) run on CPU with bfloat16: close to float32."""
    torch.manual_seed(0)
    model = randomize_(et.create_model("efficientnet_b0", num_classes=10)).eval()
    fastm = fast.optimize_for_inference(model, fuse=True, channels_last=True, compile=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with fast.autocast("cpu"):
            out = fastm(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16
    assert max_rel_diff(out.float(), ref) < 0.05
    assert fast.maybe_compile(model, enabled=False) is model
    with torch.no_grad(), fast.autocast("cpu", enabled=False):  # disabled: float32 throughout
        assert fastm(x.to(memory_format=torch.channels_last)).dtype == torch.float32
