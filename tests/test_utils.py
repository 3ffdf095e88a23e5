"""The timers of ``effnet_tutorial.utils``: alternation, quartiles, the thread setting."""
from __future__ import annotations

import time

import pytest
import torch

from effnet_tutorial import layers, utils
from effnet_tutorial.efficientnet import efficientnet


def test_time_alternating_alternates_and_restores_threads():
    calls = []
    before = torch.get_num_threads()
    out = utils.time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                 repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a b / b a / a b
    assert torch.get_num_threads() == before
    for t in out.values():
        assert len(t.runs) == 3 and t.q1 <= t.median <= t.q3


def test_time_alternating_quartiles_of_a_known_clock():
    state = {"now": 0.0}  # a fake clock that only the timed functions move

    def clock():
        return state["now"]

    def slow():
        state["now"] += 10.0

    def fast():
        state["now"] += 1.0

    out = utils.time_alternating({"slow": slow, "fast": fast}, repeats=5, warmup=0, threads=None,
                                 clock=clock)
    assert out["slow"].runs == (10.0,) * 5 and out["fast"].median == 1.0
    assert utils.ratio_quartiles(out["slow"], out["fast"]) == (10.0, 10.0, 10.0)


def test_time_alternating_refuses_thread_time_with_several_threads():
    with pytest.raises(ValueError, match="threads=1"):
        utils.time_alternating({"a": lambda: None}, threads=2, clock=time.thread_time)
    with pytest.raises(ValueError, match="repeats"):
        utils.time_alternating({"a": lambda: None}, repeats=1)


def test_ratio_quartiles_needs_the_same_rounds():
    a = utils.Timing(1.0, 1.0, 1.0, (1.0, 1.0))
    b = utils.Timing(1.0, 1.0, 1.0, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        utils.ratio_quartiles(a, b)


def test_batch_norm_constants_are_the_two_conventions():
    assert (layers.BN_EPS_TORCH, layers.BN_MOMENTUM_TORCH) == (1e-5, 0.1)
    assert layers.BN_EPS_TF == 1e-3 and layers.BN_MOMENTUM_TF == pytest.approx(1 - layers.BN_DECAY_TF)
    assert layers.BN_MOMENTUM_TF == 0.01
    bn_pt = efficientnet("b0").stem.bn
    bn_tf = efficientnet("b0", tf_style=True).stem.bn
    assert (bn_pt.eps, bn_pt.momentum) == (layers.BN_EPS_TORCH, layers.BN_MOMENTUM_TORCH)
    assert bn_tf.eps == layers.BN_EPS_TF and bn_tf.momentum == layers.BN_MOMENTUM_TORCH  # as timm
    trained_like_tf = efficientnet("b0", tf_style=True, bn_momentum=layers.BN_MOMENTUM_TF)
    assert all(m.momentum == 0.01 for m in trained_like_tf.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_settle_allocator_runs_and_time_alternating_can_skip_it(monkeypatch):
    calls = []
    monkeypatch.setattr(utils, "settle_allocator", lambda: calls.append("settle"))
    utils.time_alternating({"a": lambda: None}, repeats=2, warmup=0)
    utils.time_alternating({"a": lambda: None}, repeats=2, warmup=0, settle=False)
    assert calls == ["settle"]
    monkeypatch.undo()
    utils.settle_allocator(1 << 20)  # a real allocation and free; nothing to return
