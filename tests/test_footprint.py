"""Activation memory counted exactly (checked by hand on tiny networks) and the timing helpers."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import effnet_tutorial as et
from effnet_tutorial import explorer as ex
from effnet_tutorial import footprint as fp

F32 = 4  # bytes per float32


def test_conv_then_relu_by_hand():
    # conv output 8x8x8 floats, then a ReLU that writes a second tensor of the same size; while
    # the ReLU runs, both are alive
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    m = fp.activation_memory(net, (3, 8, 8))
    out = 8 * 8 * 8 * F32
    assert (m.total_bytes, m.peak_bytes, m.tensors) == (2 * out, 2 * out, 2)
    assert m.input_bytes == 3 * 8 * 8 * F32


def test_in_place_activation_writes_nothing_new():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(inplace=True))
    m = fp.activation_memory(net, (3, 8, 8))
    assert (m.total_bytes, m.peak_bytes, m.tensors) == (8 * 8 * 8 * F32,) * 2 + (1,)


class Residual(nn.Module):
    """y = conv2(conv1(x)) + x: the input is held for the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, 1, bias=False)  # 16 x 5 x 5
        self.conv2 = nn.Conv2d(16, 4, 1, bias=False)  # 4 x 5 x 5

    def forward(self, x):
        return self.conv2(self.conv1(x)) + x


def test_residual_block_by_hand():
    m = fp.activation_memory(Residual(), (4, 5, 5))
    wide, narrow = 16 * 25 * F32, 4 * 25 * F32
    # conv1 out (wide), conv2 out (narrow), the sum (narrow); at most: the wide map and conv2's
    # output while conv2 runs, or conv2's output and the sum while the add runs
    assert m.total_bytes == wide + 2 * narrow
    assert m.peak_bytes == max(wide + narrow, 2 * narrow)
    assert m.tensors == 3


def test_batch_norm_statistics_are_not_activations_and_meta_agrees():
    def make():
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))

    cpu = fp.activation_memory(make(), (3, 7, 7))
    with torch.device("meta"):
        meta = fp.activation_memory(make(), (3, 7, 7))
    assert cpu == meta
    assert cpu.total_bytes == 2 * 6 * 49 * F32


def test_batch_size_scales_memory_linearly():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    one, four = fp.activation_memory(net, 8), fp.activation_memory(net, 8, batch_size=4)
    assert (four.total_bytes, four.peak_bytes, four.input_bytes) == (
        4 * one.total_bytes, 4 * one.peak_bytes, 4 * one.input_bytes)
    with pytest.raises(ValueError):
        fp.activation_memory(net, 8, batch_size=0)


def test_b0_counts_are_repeatable_and_meta_equals_cpu():
    with torch.device("meta"):
        meta = fp.activation_memory(et.EfficientNet(), 64)
    cpu = fp.activation_memory(et.EfficientNet(), 64)
    assert meta == cpu == fp.activation_memory(et.EfficientNet(), 64)
    # the largest layer output is a floor for the peak; the total is far above the peak
    assert cpu.peak_bytes >= 96 * 32 * 32 * F32  # stage 2's expanded map at 64 px: 96 x 32 x 32
    assert cpu.total_bytes > 3 * cpu.peak_bytes


def test_depth_leaves_the_peak_resolution_raises_it():
    with torch.device("meta"):
        b0 = fp.activation_memory(et.EfficientNet(), 64)
        deep = fp.activation_memory(et.EfficientNet(depth_mult=3.0), 64)
        large = fp.activation_memory(et.EfficientNet(), 128)
    assert deep.peak_bytes == b0.peak_bytes and deep.total_bytes > 2 * b0.total_bytes
    assert large.peak_bytes == pytest.approx(4 * b0.peak_bytes, rel=0.01)


def test_median_interval_order_statistics():
    iv = fp.median_interval(list(range(1, 16)))  # n = 15: [x_4, x_12], coverage 0.965
    assert (iv.median, iv.low, iv.high) == (8, 4, 12)
    assert iv.confidence == pytest.approx(1 - 2 * sum(math.comb(15, i) for i in range(4)) / 2 ** 15)
    assert iv.confidence >= 0.95 and iv.excludes(3.5) and not iv.excludes(8)
    small = fp.median_interval([3.0, 1.0, 2.0])  # too few for 95%: the range, with its coverage
    assert (small.low, small.median, small.high) == (1.0, 2.0, 3.0)
    assert small.confidence == pytest.approx(0.75)
    with pytest.raises(ValueError):
        fp.median_interval([])


def test_round_robin_alternates_and_pairs():
    calls = []
    fake_time = iter(range(1000))
    times = fp.time_round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               rounds=3, warmup=1, threads=None, clock=lambda: next(fake_time))
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(v) for v in times.values()] == [3, 3]
    assert fp.paired_ratios({"a": [2.0, 6.0], "b": [1.0, 3.0]}, "a", "b") == [2.0, 2.0]


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with fp.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_match_macs_lands_close_to_the_target():
    target = ex.explore(1).macs
    for dim in ("depth", "width", "resolution"):
        net = ex.match_macs(target, dim)
        assert abs(net.macs / target - 1) < 0.05, (dim, net)
        scaled = {"depth": net.depth, "width": net.width, "resolution": net.resolution / 224}
        assert all(v == 1 for k, v in scaled.items() if k != dim) and scaled[dim] > 1
        with torch.device("meta"):
            assert et.count_flops(net.build(), net.resolution) == net.macs
    with pytest.raises(ValueError):
        ex.match_macs(target, "colour")  # type: ignore[arg-type]


def test_equal_cost_networks_and_presets():
    nets = ex.equal_cost_networks(1)
    assert [n.label.split(" ")[0] for n in nets] == ["paper", "depth", "width", "resolution"]
    assert all(abs(n.macs / nets[0].macs - 1) < 0.05 for n in nets)
    b2 = ex.preset_network("b2")
    with torch.device("meta"):
        model = et.create_model("efficientnet_b2")
    assert (b2.params, b2.macs, b2.resolution) == (et.count_parameters(model),
                                                   et.count_flops(model, 260), 260)
