import math

import pytest
import torch
from torch import nn

from effnet_tutorial import layers


@pytest.mark.parametrize("size,k,s,expected", [
    (512, 3, 2, (0, 1)), (512, 5, 2, (1, 2)), (224, 3, 1, (1, 1)), (7, 3, 2, (1, 1)),
    (8, 1, 1, (0, 0)), (9, 5, 2, (2, 2)),
])
def test_same_padding_matches_tensorflow_rule(size, k, s, expected):
    assert layers.same_padding(size, k, s) == expected


@pytest.mark.parametrize("size", [7, 8, 15, 224, 333])
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 2), (2, 2)])
def test_same_conv_output_is_ceil_of_size_over_stride(size, k, s):
    conv = layers.create_conv2d(2, 3, k, s, padding="same")
    assert conv(torch.zeros(1, 2, size, size)).shape[-1] == math.ceil(size / s)


def test_same_padding_equals_explicit_asymmetric_pad():
    torch.manual_seed(0)
    conv = layers.create_conv2d(3, 4, 3, 2, padding="same")
    assert isinstance(conv, layers.Conv2dSame)
    x = torch.randn(1, 3, 8, 8)
    ref = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), ref)
    sym = layers.create_conv2d(3, 4, 3, 2, padding="symmetric")
    sym.weight.data.copy_(conv.weight.data)
    assert not torch.allclose(sym(x), conv(x)), "the two paddings sample different grids"


def test_stride_one_same_is_a_plain_conv():
    conv = layers.create_conv2d(4, 4, 5, 1, groups=4, padding="same")
    assert type(conv) is nn.Conv2d and conv.padding == (2, 2)


def test_bad_padding_name_is_rejected():
    with pytest.raises(ValueError, match="padding must be one of"):
        layers.create_conv2d(3, 3, 3, padding="valid")


def test_depthwise_separable_counts_for_the_source_articles_example():
    standard = nn.Conv2d(3, 256, 5, bias=False)
    separable = layers.DepthwiseSeparableConv2d(3, 256, 5)
    assert sum(p.numel() for p in standard.parameters()) == 19_200
    assert sum(p.numel() for p in separable.parameters()) == 843  # 5*5*3 + 3*256
    assert separable(torch.zeros(1, 3, 16, 16)).shape == (1, 256, 16, 16)


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20_000, 3, 2, 2)
    y = layers.drop_path(x, 0.25, training=True)
    per_sample = y.flatten(1)
    values = per_sample.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert abs(y.mean().item() - 1.0) < 0.02
    assert layers.drop_path(x, 0.25, training=False) is x


def test_drop_path_equals_timm_bit_for_bit():
    from timm.layers import drop_path as timm_drop_path

    x = torch.randn(64, 8, 5, 5)
    torch.manual_seed(3)
    ours = layers.drop_path(x, 0.3, training=True)
    torch.manual_seed(3)
    assert torch.equal(ours, timm_drop_path(x, 0.3, training=True))


def test_drop_path_rejects_bad_rates():
    with pytest.raises(ValueError):
        layers.DropPath(1.0)


@pytest.mark.parametrize("value,expected", [(19.2, 24), (123.2, 120), (44.8, 48), (32, 32), (3, 8)])
def test_make_divisible_rounds_to_eight_with_the_ten_percent_rule(value, expected):
    assert layers.make_divisible(value) == expected


def test_image_batch_checks_say_what_is_wrong():
    with pytest.raises(ValueError, match="unsqueeze"):
        layers.check_image_batch(torch.zeros(3, 8, 8), 3)
    with pytest.raises(ValueError, match="channels-last"):
        layers.check_image_batch(torch.zeros(1, 8, 8, 3), 3)
    with pytest.raises(ValueError, match="floating-point"):
        layers.check_image_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 3)
