"""Compound scaling: the cost law, the candidate grid, the grid search and the proxy network."""
from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import classify, scaling
from effnet_tutorial.data import proxy
from effnet_tutorial.efficientnet import EfficientNet


@functools.lru_cache(maxsize=None)
def _macs(width: float = 1.0, depth: float = 1.0, resolution: int = 224) -> int:
    with torch.device("meta"):
        return et.count_flops(EfficientNet(width_mult=width, depth_mult=depth), resolution)


def test_resolution_law_is_exact_up_to_pooled_layers():
    # Every conv's output map doubles on each side (128 and 256 are multiples of the total
    # stride 32, so no map size is rounded). Only layers that act on pooled vectors do not
    # scale: the classifier and the squeeze-excite 1x1 convs. Without them the ratio is exact.
    def spatial_macs(resolution: int) -> int:
        with torch.device("meta"):
            rows = et.flop_breakdown(EfficientNet(), resolution)
        return sum(r.macs for r in rows if r.kind != "linear" and ".se." not in r.name)

    assert spatial_macs(256) == 4 * spatial_macs(128)
    assert _macs(resolution=256) / _macs(resolution=128) == pytest.approx(4.0, rel=0.02)


def test_width_law_is_quadratic_for_dense_layers_only():
    # Doubling 32, 16, 24, ... keeps the multiples of 8, so no rounding enters. The 1x1 convs
    # grow 4x; depthwise convs, the stem (3 input channels) and the classifier grow 2x, so the
    # whole lands between 2 and 4, close to 4 because 1x1 convs dominate an MBConv.
    ratio = _macs(width=2.0) / _macs()
    assert 3.5 < ratio < 4.0


def test_depth_law_is_linear_in_the_stages():
    # Doubling every stage's block count doubles the stages' cost; stem and head stay, and the
    # extra blocks run at the stage's output width (the stride-2 first block is not repeated).
    assert _macs(depth=2.0) / _macs() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("phi", [1, 2, 3])
def test_compound_cost_follows_d_w2_r2_within_rounding(phi):
    c = scaling.compound_coefficients(phi)
    res = scaling.scaled_resolution(224, c.resolution)
    measured = _macs(c.width, c.depth, res) / _macs()
    # ceil() of the block counts only adds blocks (at phi = 1 it turns every 1-block stage into
    # 2 and 2 into 3: +34%); the 10% rule of channel rounding never loses more than 10% of w;
    # depthwise layers grow with w, not w^2 (-5% at most here). Together: within [0.9, 1.4].
    assert 0.9 <= measured / c.flops_factor <= 1.4
    assert measured == pytest.approx(c.flops_factor, rel=0.4)


def test_constraint_of_paper_triple():
    assert scaling.flops_constraint(1.2, 1.1, 1.15) == pytest.approx(1.92, abs=0.01)
    assert scaling.compound_coefficients(0).flops_factor == 1.0


@pytest.mark.parametrize("step", [0.1, 0.2, 0.25])
def test_candidate_grid_satisfies_the_constraint(step):
    grid = scaling.candidate_grid(step)
    assert len(grid) == len(set(grid)) > 3
    for a, b, g in grid:
        assert min(a, b, g) >= 1.0
        assert a * b ** 2 * g ** 2 == pytest.approx(2.0, rel=1e-5)
    assert (1.0, 1.0, pytest.approx(math.sqrt(2), rel=1e-5)) in grid


def test_candidate_grid_and_coefficients_errors():
    with pytest.raises(ValueError):
        scaling.candidate_grid(step=0)
    with pytest.raises(ValueError):
        scaling.compound_coefficients(1, alpha=0.9)
    with pytest.raises(ValueError):
        scaling.scaled_resolution(0, 1.0)


def test_grid_search_ranks_with_a_fake_evaluator():
    # A cheap stand-in for training: it prefers gamma near 1.15 and adds seed noise.
    def evaluate(c: scaling.Coefficients, seed: int) -> float:
        return -abs(c.resolution - 1.15) + 0.001 * seed

    candidates = scaling.candidate_grid(0.2)
    results = scaling.grid_search(evaluate, candidates, seeds=(0, 1), log=None)
    assert len(results) == len(candidates)
    assert [r.mean for r in results] == sorted((r.mean for r in results), reverse=True)
    best = results[0]
    assert min(best.alpha, best.beta, best.gamma) >= 1
    assert scaling.flops_constraint(best.alpha, best.beta, best.gamma) == pytest.approx(2.0, rel=1e-5)
    assert best.std == pytest.approx(0.001 / math.sqrt(2))
    with pytest.raises(ValueError):
        scaling.grid_search(evaluate, [], log=None)


def test_grid_search_with_a_real_one_epoch_run():
    train, test = proxy.make_proxy_splits(1, 1, size=16, seed=0)
    evaluator = scaling.ProxyEvaluator(
        train.images, train.labels, test.images, test.labels, len(proxy.CLASS_NAMES),
        classify.ClassifierConfig(epochs=1, batch_size=16, num_threads=1), base_resolution=12, log=None)
    results = scaling.grid_search(evaluator, [(1.0, 1.0, math.sqrt(2)), (2.0, 1.0, 1.0)], seeds=(0,), log=None)
    assert len(results) == 2 and all(0.0 <= r.mean <= 1.0 for r in results)
    assert {run.resolution for run in evaluator.runs} == {17, 12}


def test_proxy_network_scales_its_cost():
    with torch.device("meta"):
        base = scaling.proxy_efficientnet()
        wide = scaling.proxy_efficientnet(scaling.Coefficients(1.0, 2.0, 1.0))
        deep = scaling.proxy_efficientnet(scaling.Coefficients(2.0, 1.0, 1.0))
    m0 = et.count_flops(base, 20)
    assert 3.0 < et.count_flops(wide, 20) / m0 < 4.0
    assert 1.2 < et.count_flops(deep, 20) / m0 < 2.0
    assert [s.repeats for s in deep.stage_specs] == [1, 2, 2, 3, 3, 1, 1]


def test_proxy_network_runs_on_small_images():
    torch.manual_seed(0)
    net = scaling.proxy_efficientnet(num_classes=5).eval()
    assert net(torch.zeros(2, 3, 20, 20)).shape == (2, 5)


def test_proxy_network_zero_inits_its_residual_branches():
    net = scaling.proxy_efficientnet(scaling.Coefficients(2.0, 1.0, 1.0))
    skips = [m for m in net.modules() if getattr(m, "has_skip", False)]
    assert skips and all(torch.count_nonzero(m.project.bn.weight) == 0 for m in skips)
    plain = scaling.proxy_efficientnet(scaling.Coefficients(2.0, 1.0, 1.0), zero_init_residual=False)
    assert all(torch.all(m.project.bn.weight == 1) for m in plain.modules() if getattr(m, "has_skip", False))


def _tiny_evaluator(**options) -> scaling.ProxyEvaluator:
    train, test = proxy.make_proxy_splits(3, 1, size=16, seed=0)
    return scaling.ProxyEvaluator(
        train.images, train.labels, test.images, test.labels, len(proxy.CLASS_NAMES),
        classify.ClassifierConfig(epochs=2, batch_size=8, num_threads=1), base_resolution=12, log=None, **options)


@pytest.mark.slow
def test_run_many_in_two_processes_equals_one_process():
    jobs = [(scaling.Coefficients(1.0, 1.0, 1.0), 0), (scaling.Coefficients(1.2, 1.1, 1.15), 1),
            (scaling.Coefficients(1.0, 1.0, 1.0), 1)]
    serial = _tiny_evaluator().run_many(jobs, workers=1)
    lines: list[str] = []
    evaluator = _tiny_evaluator()
    evaluator.log = lines.append
    parallel = evaluator.run_many(jobs, workers=2)
    assert [(r.coefficients, r.seed, r.resolution, r.macs, r.params, r.accuracy) for r in parallel] == \
           [(r.coefficients, r.seed, r.resolution, r.macs, r.params, r.accuracy) for r in serial]
    assert evaluator.runs == parallel and len(lines) == len(jobs)
    assert sorted(lines) == sorted(scaling.describe_run(r) for r in parallel)


def test_run_many_rejects_bad_workers_and_grid_search_needs_an_evaluator():
    with pytest.raises(ValueError, match="workers"):
        _tiny_evaluator().run_many([(scaling.Coefficients(1.0, 1.0, 1.0), 0)], workers=0)
    with pytest.raises(ValueError, match="ProxyEvaluator"):
        scaling.grid_search(lambda c, s: 0.0, [(1.0, 1.0, 1.0)], log=None, workers=2)


def test_evaluator_can_train_without_zero_init():
    evaluator = _tiny_evaluator(zero_init_residual=False)
    run = evaluator.run(scaling.Coefficients(2.0, 1.0, 1.0), 0)
    assert 0.0 <= run.accuracy <= 1.0 and evaluator.zero_init_residual is False


def test_proxy_macs_counts_the_rounded_network():
    c = scaling.Coefficients(1.2, 1.1, 1.15)
    net = scaling.proxy_efficientnet(c)
    assert scaling.proxy_macs(c) == et.count_flops(net, 23)  # 20 * 1.15 = 23 px
    assert scaling.proxy_macs(scaling.Coefficients(1.0, 1.0, 1.0)) == 621456


@pytest.mark.parametrize("solve", ["width", "depth", "resolution"])
def test_match_cost_returns_the_nearest_cost_on_its_grid(solve):
    base = scaling.Coefficients(1.0, 1.0, 1.0)
    target = 2.87 * scaling.proxy_macs(base)
    grid = {"width": [1.0 + 0.05 * k for k in range(30)], "depth": [1.0 + 0.25 * k for k in range(20)],
            "resolution": list(range(20, 48))}[solve]
    found = scaling.match_cost(base, target, solve=solve, grid=grid)
    # Brute force over the same grid: the bisection must find the same nearest cost.
    def cost(v):
        c = dataclasses.replace(base, resolution=v / 20) if solve == "resolution" else dataclasses.replace(base, **{solve: v})
        return scaling.proxy_macs(c)
    best = min(abs(math.log(cost(v) / target)) for v in grid)
    assert abs(math.log(scaling.proxy_macs(found) / target)) == pytest.approx(best)
    untouched = {"width", "depth", "resolution"} - {solve}
    assert all(getattr(found, k) == 1.0 for k in untouched)


def test_match_cost_hits_the_width_target_within_two_and_a_half_percent():
    c = scaling.match_cost(scaling.Coefficients(1.2, 1.0, 1.15), 2 * scaling.proxy_macs(scaling.Coefficients(1, 1, 1)))
    assert (c.depth, c.resolution) == (1.2, 1.15) and c.width > 1
    assert scaling.proxy_macs(c) / (2 * 621456) == pytest.approx(1.0, abs=0.025)


def test_match_cost_errors():
    base = scaling.Coefficients(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="solve"):
        scaling.match_cost(base, 1e6, solve="height")
    with pytest.raises(ValueError, match="positive"):
        scaling.match_cost(base, 0)
    with pytest.raises(ValueError, match="grid"):
        scaling.match_cost(base, 1e6, grid=[])


def test_search_result_interval_is_the_t_interval_of_its_scores():
    r = scaling.SearchResult(1.0, 1.0, 1.0, [0.5, 0.6, 0.55, 0.58, 0.52])
    i = r.interval()
    assert i.estimate == pytest.approx(0.55) and i.n == 5
    assert i.half_width == pytest.approx(2.7764451052 * r.std / math.sqrt(5), rel=1e-9)


def test_nearest_cost_bisects_compares_neighbours_and_refuses_targets_beyond_the_grid():
    values = list(range(1, 11))
    assert scaling.nearest_cost(values, lambda v: v * v, 50) == 7  # 49 is nearer 50 than 64
    assert scaling.nearest_cost(values, lambda v: 10.0, 10.0) == 1  # all tie: the smallest
    wiggly = {1: 1, 2: 4, 3: 3, 4: 16, 5: 25}  # 3 costs less than 2: a local wiggle
    assert scaling.nearest_cost(list(wiggly), wiggly.get, 3.1, window=1) == 3
    with pytest.raises(ValueError, match="widen the grid"):
        scaling.nearest_cost(values, lambda v: v, 11)
    with pytest.raises(ValueError, match="at least one"):
        scaling.nearest_cost([], lambda v: v, 1)
