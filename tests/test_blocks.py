import pytest
import torch

from effnet_tutorial import count_parameters
from effnet_tutorial.blocks import MBConv, SqueezeExcite


def test_se_width_comes_from_the_block_input():
    block = MBConv(40, 80, 3, stride=2, expand_ratio=6)
    assert block.se.reduce.out_channels == 10  # 40 * 0.25, not 240 * 0.25
    assert block.se.reduce.in_channels == 240


def test_mbconv1_has_no_expansion_and_skip_rule():
    ds = MBConv(32, 16, 3, 1, expand_ratio=1)
    assert ds.expand is None and not ds.has_skip
    same = MBConv(16, 16, 3, 1, expand_ratio=6)
    assert same.has_skip
    assert not MBConv(16, 16, 3, 2, expand_ratio=6).has_skip


def test_mbconv_shapes_and_parameter_count():
    block = MBConv(40, 80, 3, stride=2, expand_ratio=6)
    y = block(torch.randn(2, 40, 28, 28))
    assert y.shape == (2, 80, 14, 14)
    # expand 40*240 + BN 480; dw 9*240 + 480; SE 240*10+10 + 10*240+240; project 240*80 + 160
    expected = 9600 + 480 + 2160 + 480 + 2410 + 2640 + 19200 + 160
    assert count_parameters(block) == expected


def test_mbconv_eval_is_deterministic_and_drop_path_only_in_training():
    torch.manual_seed(0)
    block = MBConv(16, 16, 3, 1, expand_ratio=6, drop_path_rate=0.5).eval()
    x = torch.randn(64, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block(x))
        branch = block(x) - x  # the residual branch at inference (drop path off)
        block.drop_path.train()  # only drop path in training mode (batch norm keeps its statistics)
        y = block(x)
    # in training each sample keeps its branch scaled by 1/(1 - 0.5), or drops it to the shortcut
    kept = [torch.allclose(y[i], x[i] + 2 * branch[i], atol=1e-5) for i in range(len(x))]
    dropped = [torch.allclose(y[i], x[i]) for i in range(len(x))]
    assert all(k != d for k, d in zip(kept, dropped))
    assert 0 < sum(dropped) < len(x)


def test_squeeze_excite_gates_between_zero_and_one():
    se = SqueezeExcite(8, 2)
    x = torch.rand(1, 8, 4, 4) + 0.1
    ratio = se(x) / x
    assert (ratio > 0).all() and (ratio < 1).all()
    # one gate per channel: constant over space
    torch.testing.assert_close(ratio, ratio[..., :1, :1].expand_as(ratio))


def test_bad_block_options_are_rejected():
    with pytest.raises(ValueError, match="stride"):
        MBConv(8, 8, 3, stride=3)
    with pytest.raises(ValueError, match="expand_ratio"):
        MBConv(8, 8, 3, expand_ratio=0)


def test_inference_leaves_the_callers_tensor_untouched():
    # The activations run in place on the block's own tensors; the caller's input must survive.
    torch.manual_seed(0)
    for expand in (1, 6):
        block = MBConv(16, 16, 3, 1, expand_ratio=expand, drop_path_rate=0.2).eval()
        x = torch.randn(2, 16, 9, 9)
        kept = x.clone()
        with torch.no_grad():
            y = block(x)
        assert torch.equal(x, kept)
        assert torch.equal(y, block(x).detach())


def test_training_gradients_are_those_of_the_composed_block():
    # drop path off so both passes are deterministic: x -> expand -> depthwise -> SE -> project + x.
    torch.manual_seed(0)
    block = MBConv(8, 8, 3, 1, expand_ratio=4).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    block(x).square().sum().backward()
    grad = x.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    h = block.se(block.depthwise(block.expand(x2)))
    (block.project(h) + x2).square().sum().backward()
    torch.testing.assert_close(grad, x2.grad)
