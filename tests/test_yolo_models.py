"""Chapter 8: the YOLOv4 blocks (exact parameter counts against hand formulas, shapes, errors)
and the YOLOv4-CSP / -P5 / -P6 / -P7 / -tiny models built from their layouts."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import scaled_yolo as sy
from effnet_tutorial import yolo_blocks as yb
from effnet_tutorial import yolo_models as ym


def conv_bn(ci: int, co: int, k: int = 1) -> int:
    return ci * co * k * k + 2 * co  # conv weights + BN scale and shift


def test_conv_bn_act_and_dark_bottleneck_counts():
    assert et.count_parameters(yb.ConvBNAct(16, 32, 3)) == conv_bn(16, 32, 3)
    c, h = 64, 32
    block = yb.DarkBottleneck(c, h)
    assert et.count_parameters(block) == conv_bn(c, h) + conv_bn(h, c, 3)
    x = torch.randn(2, c, 8, 8)
    assert block(x).shape == x.shape
    assert et.count_flops(block, (c, 8, 8)) == 64 * (c * h + 9 * h * c)


@pytest.mark.parametrize("c, n", [(64, 1), (128, 3)])
def test_bottleneck_csp_count_and_shape(c, n):
    h = c // 2
    layer = yb.BottleneckCSP(c, n)
    expected = (conv_bn(c, h) + n * (conv_bn(h, h) + conv_bn(h, h, 3)) + h * h + c * h + 2 * c
                + conv_bn(c, c))
    assert et.count_parameters(layer) == expected
    assert layer(torch.randn(1, c, 8, 8)).shape == (1, c, 8, 8)
    # multiply-adds per position in units of c^2: 1/2 + 1/2 + 1/4 + 1 + n * (1/4 + 9/4)
    per_position = Fraction(et.count_flops(layer, (c, 4, 4)), 16 * c * c)
    assert per_position == Fraction(9, 4) + n * Fraction(5, 2)


def test_reversed_dark_layers_plain_and_csp():
    ci, c, n = 256, 128, 2
    plain, csp = yb.ReversedDarkLayer(ci, c, n), yb.CSPReversedDarkLayer(ci, c, n)
    assert et.count_parameters(plain) == conv_bn(ci, c) + n * (conv_bn(c, 2 * c, 3) + conv_bn(2 * c, c))
    assert et.count_parameters(csp) == (conv_bn(ci, c) + n * (conv_bn(c, c) + conv_bn(c, c, 3))
                                        + c * c + 4 * c + conv_bn(2 * c, c))
    x = torch.randn(1, ci, 4, 4)
    assert plain(x).shape == csp(x).shape == (1, c, 4, 4)
    # the paper's "about 40%": 25 against 42 units of whc^2
    ratio = Fraction(et.count_flops(csp, (ci, 4, 4)), et.count_flops(plain, (ci, 4, 4)))
    assert ratio == Fraction(25, 42)


def test_spp_blocks():
    ci, c = 256, 128
    spp, sppcsp = yb.SPPBlock(ci, c), yb.SPPCSP(ci, c)
    assert et.count_parameters(sppcsp) == (conv_bn(ci, c) + conv_bn(c, c, 3) + conv_bn(c, c)
                                           + conv_bn(4 * c, c) + conv_bn(c, c, 3) + ci * c
                                           + 4 * c + conv_bn(2 * c, c))
    assert et.count_parameters(spp) == (conv_bn(ci, c) + conv_bn(c, 2 * c, 3) + conv_bn(2 * c, c)
                                        + conv_bn(4 * c, c) + conv_bn(c, 2 * c, 3) + conv_bn(2 * c, c))
    x = torch.randn(1, ci, 13, 13)
    assert spp(x).shape == sppcsp(x).shape == (1, c, 13, 13)
    ratio = Fraction(et.count_flops(sppcsp, (ci, 4, 4)), et.count_flops(spp, (ci, 4, 4)))
    assert ratio == Fraction(29, 46)


def test_partial_block():
    ci, b = 64, 64
    block = yb.PartialBlock(ci, b)
    g = b // 2
    assert et.count_parameters(block) == (conv_bn(ci, b, 3) + conv_bn(b // 2, g, 3) + conv_bn(g, g, 3)
                                          + conv_bn(2 * g, b))
    out, tap = block(torch.randn(1, ci, 8, 8))
    assert out.shape == (1, 2 * b, 8, 8) and tap.shape == (1, b, 8, 8)  # b/2 + k g = 2b, k = 3
    assert et.count_flops(block, (ci, 8, 8)) == 64 * (9 * ci * b + 2 * 9 * g * g + 2 * g * b)


def test_head():
    head = yb.YOLOHead([128, 256], anchors=3, classes=80)
    assert et.count_parameters(head) == (128 + 1) * 255 + (256 + 1) * 255
    outs = head([torch.zeros(1, 128, 4, 4), torch.zeros(1, 256, 2, 2)])
    assert [o.shape for o in outs] == [(1, 255, 4, 4), (1, 255, 2, 2)]
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        head([torch.zeros(1, 128, 4, 4)])


def test_bad_blocks_are_rejected():
    with pytest.raises(ValueError, match="act"):
        yb.ConvBNAct(3, 8, act="relu6")
    with pytest.raises(ValueError, match="positive"):
        yb.BottleneckCSP(64, 0)
    with pytest.raises(ValueError, match="even"):
        yb.BottleneckCSP(63, 1)
    with pytest.raises(ValueError, match="even"):
        yb.PartialBlock(64, 63)


def test_layouts_and_widths():
    assert ym.layout("YOLOv4-CSP").blocks == (1, 2, 8, 8, 4)
    assert ym.layout("YOLOv4-P7").levels == (3, 4, 5, 6, 7)
    assert ym.scaled_width(1024, 1.25) == 1280 and ym.scaled_width(32, 1.25) == 40
    assert ym.stage_table("YOLOv4-P6")[-1] == ("P6", 64, 1024, 7)
    with pytest.raises(ValueError, match="unknown model"):
        ym.layout("YOLOv4-P8")


def test_csp_first_stage_is_plain_only_in_yolov4_csp():
    csp = ym.CSPDarknet((1, 2, 8, 8, 4), plain_first_stage=True)
    assert isinstance(csp.stages[0][1], yb.DarkBottleneck)
    assert isinstance(ym.CSPDarknet((1, 3, 15, 15, 7)).stages[0][1], yb.BottleneckCSP)
    with pytest.raises(ValueError, match="stages"):
        ym.CSPDarknet((1, 2))


def test_small_model_runs_and_checks_its_input():
    model = ym.YoloDetector(ym.YoloLayout("mini", 64, (1, 1, 1, 1, 1), True, 1, anchors=3), classes=2)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 21, 8, 8), (1, 21, 4, 4), (1, 21, 2, 2)]
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 64))


def test_published_layouts_counted_on_meta():
    # the modules (80 classes) have exactly the parameters of the authors' released models
    expected = sy.SCALED_YOLOV4_RELEASED_PARAMS
    assert set(expected) == {"YOLOv4-tiny", *ym.LAYOUTS}
    for name, params in expected.items():
        assert ym.model_costs(name)[0] == params
    with torch.device("meta"):
        p7 = ym.yolo_model("YOLOv4-P7")
        outs = p7(torch.zeros(1, 3, 1536, 1536))
    assert [o.shape[-1] for o in outs] == [192, 96, 48, 24, 12]
    assert all(o.shape[1] == 4 * 85 for o in outs)


def test_tiny_shapes_and_input_check():
    tiny = ym.YoloV4Tiny(classes=80)
    outs = tiny(torch.randn(1, 3, 128, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 255, 4, 4), (1, 255, 8, 8)]
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny(torch.randn(1, 3, 100, 128))
