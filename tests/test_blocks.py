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
    x = torch.randn(4, 16, 8, 8)
    torch.testing.assert_close(block(x), block(x))


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
