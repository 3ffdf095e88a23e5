"""Chapter 8: Scaled-YOLOv4's Tables 1 and 2 computed from modules, and the small cost models."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import scaled_yolo as sy

W = H = 8


@pytest.mark.parametrize("kind", sy.LAYER_KINDS)
@pytest.mark.parametrize("k", [1, 3])
def test_table1_module_counts_equal_formulas(kind, k):
    b = 128
    assert et.count_flops(sy.computational_layer(kind, b, k), (b, H, W)) == sy.layer_cost(kind, W, H, b, k)


@pytest.mark.parametrize("kind", sy.LAYER_KINDS)
def test_table1_growth_with_size_depth_width(kind):
    base = et.count_flops(sy.computational_layer(kind, 128, 2), (128, 8, 8))
    size = et.count_flops(sy.computational_layer(kind, 128, 2), (128, 12, 12))  # alpha = 1.5
    depth = et.count_flops(sy.computational_layer(kind, 128, 3), (128, 8, 8))  # beta = 1.5
    width = et.count_flops(sy.computational_layer(kind, 192, 2), (192, 8, 8))  # gamma = 1.5
    assert Fraction(size, base) == sy.COST_GROWTH["size"](Fraction(3, 2)) == Fraction(9, 4)
    assert Fraction(depth, base) == sy.COST_GROWTH["depth"](Fraction(3, 2))
    assert Fraction(width, base) == sy.COST_GROWTH["width"](Fraction(3, 2))


@pytest.mark.parametrize("kind", sy.LAYER_KINDS)
@pytest.mark.parametrize("transitions, overhead", [("paper", sy.PAPER_CSP_OVERHEAD),
                                                   ("released", sy.RELEASED_CSP_OVERHEAD)])
def test_table2_module_counts_equal_formulas(kind, transitions, overhead):
    b, k = 128, 2
    layer = sy.CSPLayer(kind, b, k, transitions)
    assert et.count_flops(layer, (b, H, W)) == sy.csp_layer_cost(kind, W, H, b, k, overhead)
    assert layer(torch.zeros(1, b, H, W)).shape == (1, b, H, W)


def test_csp_reductions_are_the_papers():
    for kind, percent in sy.PAPER_CSP_REDUCTIONS.items():
        assert round(100 * sy.csp_reduction(kind), 1) == percent


def test_csp_reduction_at_finite_depth_from_modules():
    b, k = 64, 15
    for kind in ("res", "dark"):
        plain = et.count_flops(sy.computational_layer(kind, b, k), (b, 4, 4))
        csp = et.count_flops(sy.CSPLayer(kind, b, k), (b, 4, 4))
        assert 1 - csp / plain == pytest.approx(sy.csp_reduction(kind, k))
    assert sy.csp_reduction("res", 3) == 0.0 and sy.csp_reduction("res", 1) < 0  # break-even at k = 3


def test_bad_layers_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        sy.computational_layer("vgg", 64, 1)
    with pytest.raises(ValueError, match="k >= 1"):
        sy.computational_layer("res", 64, 0)
    with pytest.raises(ValueError, match="ResNeXt"):
        sy.computational_layer("resx", 96, 1)
    with pytest.raises(ValueError, match="transitions"):
        sy.CSPLayer("dark", 64, 1, transitions="other")
    with pytest.raises(ValueError):
        sy.csp_reduction("res", 0)


def test_memory_access_cost_is_smallest_for_equal_channels():
    hw, product = 16, 64 * 64
    costs = {c: sy.memory_access_cost(sy.conv(c, product // c), (c, hw, hw)) for c in (16, 32, 64, 128, 256)}
    flops = {et.count_flops(sy.conv(c, product // c), (c, hw, hw)) for c in costs}
    assert len(flops) == 1 and min(costs, key=costs.get) == 64
    assert costs[64] == hw * hw * 128 + 64 * 64


def test_osa_and_dense_blocks():
    b, g, k = 64, 16, 3
    osa, dense = sy.OSABlock(b, g, k), sy.DenseBlock(b, g, k)
    x = torch.zeros(1, b, 8, 8)
    assert osa(x).shape == dense(x).shape == (1, b + k * g, 8, 8)
    assert et.count_flops(osa, (b, 8, 8)) == 64 * 9 * (b * g + (k - 1) * g * g)
    assert et.count_flops(dense, (b, 8, 8)) == 64 * 9 * g * sum(b + i * g for i in range(k))
    assert sy.conv_io(osa, (b, 8, 8)) < sy.conv_io(dense, (b, 8, 8))


def test_receptive_field():
    assert sy.receptive_field([(3, 1)] * 2) == 5
    assert sy.receptive_field([(3, 2), (3, 1)]) == 7
    p5, p6 = (sy.receptive_field(sy.csp_darknet_layers(sy.YOLOV4_LARGE_STAGE_BLOCKS[:n])) for n in (5, 6))
    assert p6 > p5


def test_published_results_are_data():
    assert [r.input_size for r in sy.EFFICIENTDET_COCO] == [512, 640, 768, 896, 1024, 1280, 1280, 1536, 1536]
    assert [r.name for r in sy.SCALED_YOLOV4_COCO] == ["YOLOv4-P5", "YOLOv4-P6", "YOLOv4-P7"]
    assert all(r.source for r in sy.EFFICIENTDET_COCO + sy.SCALED_YOLOV4_COCO)
    # every EfficientDet row is v7 Table 2: D7x only there, D2/D3 the v7 figures, not automl's older README
    effdet = {r.name: r for r in sy.EFFICIENTDET_COCO}
    assert (effdet["EfficientDet-D2"].ap, effdet["EfficientDet-D3"].ap) == (43.9, 47.2)
    assert effdet["EfficientDet-D7x"].params_millions == 77.0 and effdet["EfficientDet-D7x"].ap == 55.1
    assert [ap for _, ap in sy.EFFICIENTDET_D7_AP_BY_VERSION] == [51.0, 52.2, 53.7]
    assert effdet["EfficientDet-D7"].ap == sy.EFFICIENTDET_D7_AP_BY_VERSION[-1][1]
    assert [ap for _, ap in sy.SCALED_YOLOV4_P7_AP_BY_VERSION] == [55.4, 55.5]
    assert sy.SCALED_YOLOV4_COCO[-1].ap == sy.SCALED_YOLOV4_P7_AP_BY_VERSION[0][1]
    assert (sy.YOLOV4_TINY_COCO.ap, sy.YOLOV4_TINY_FPS[0]) == (22.0, 443)
    assert all(r.params_millions is None for r in sy.SCALED_YOLOV4_COCO)  # no published figure
    assert set(sy.SCALED_YOLOV4_RELEASED_PARAMS) == {"YOLOv4-CSP", "YOLOv4-tiny", "YOLOv4-P5", "YOLOv4-P6",
                                                     "YOLOv4-P7"}
