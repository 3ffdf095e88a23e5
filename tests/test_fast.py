"""Fast kernels and opt-in fast paths compute what the textbook code computes (no timing asserts)."""
from __future__ import annotations

import os

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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- the switch
def test_using_restores_the_setting_and_set_enabled_returns_the_previous_one():
    assert fast.enabled()  # the default
    with fast.using(False):
        assert not fast.enabled()
        with fast.using(True):
            assert fast.enabled()
        assert not fast.enabled()
    assert fast.enabled()
    assert fast.set_enabled(False) is True
    assert fast.set_enabled(True) is False
    with pytest.raises(RuntimeError), fast.using(False):
        raise RuntimeError("the block failed")
    assert fast.enabled()


@pytest.mark.slow
def test_environment_variable_turns_the_kernels_off():
    import subprocess
    import sys

    code = "from effnet_tutorial import fast; print(fast.enabled())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, fast.FAST_ENV: value}).stdout.strip()
        assert out == expected, value


def test_each_kernel_runs_only_while_enabled(monkeypatch):
    from effnet_tutorial import anchors, losses, postprocess

    calls = []
    for name in ("pairwise_iou", "focal_loss_sum", "top_k_two_stage"):
        real = getattr(fast.kernels, name)
        monkeypatch.setattr(fast.kernels, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 6.0]])
    logits, targets = torch.randn(1, 6), torch.tensor([[0, -1]])
    heads = ([torch.randn(1, 3 * 2, 4, 4)], [torch.randn(1, 3 * 4, 4, 4)])
    for enabled in (False, True):
        with fast.using(enabled):
            anchors.pairwise_iou(boxes, boxes)
            losses.focal_loss_sum(logits, targets, 3)
            postprocess.select_top_k(*heads, num_classes=2, k=5)
    assert calls == ["pairwise_iou", "focal_loss_sum", "top_k_two_stage"]


# --------------------------------------------------------------------------- kernels vs textbook
@pytest.mark.parametrize("smoothing,ignored", [(0.0, False), (0.1, False), (0.0, True)])
def test_fast_focal_loss_sum_equals_the_textbook_sum_in_value_and_gradient(smoothing, ignored):
    from effnet_tutorial import losses

    g = torch.Generator().manual_seed(7)
    anchors, classes = 9, 6
    logits = (torch.randn(2, 5, 5, anchors * classes, generator=g) * 3).requires_grad_(True)
    targets = torch.randint(-1, classes, (2, 5, 5, anchors), generator=g)
    if ignored:
        targets[0, 0, :, :3] = losses.IGNORE
    results = []
    for enabled in (True, False):
        logits.grad = None
        with fast.using(enabled):
            loss = losses.focal_loss_sum(logits, targets, classes, label_smoothing=smoothing)
        loss.backward()
        results.append((loss.detach(), logits.grad.clone()))
    (fast_loss, fast_grad), (text_loss, text_grad) = results
    torch.testing.assert_close(fast_loss, text_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grad, text_grad, rtol=1e-4, atol=1e-6)


def test_auto_nms_backend_follows_the_switch(monkeypatch):
    from effnet_tutorial import postprocess

    calls = []
    monkeypatch.setattr(postprocess, "nms_reference",
                        lambda *a, _real=postprocess.nms_reference: calls.append(1) or _real(*a))
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.5], [9.0, 9.0, 12.0, 12.0]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long)
    with fast.using(True):
        fast_keep = postprocess.batched_nms(boxes, scores, labels)
    assert calls == []  # torchvision is installed in the test environment
    with fast.using(False):
        text_keep = postprocess.batched_nms(boxes, scores, labels)
    assert calls == [1] and torch.equal(fast_keep, text_keep) and fast_keep.tolist() == [0, 2]
