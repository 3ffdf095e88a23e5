"""Compound scaling: the coefficients, the cost law, and the grid search for alpha, beta, gamma.

Tan & Le (2019), Sec. 3.3: depth ``d = alpha**phi``, width ``w = beta**phi`` and resolution
``r = gamma**phi``, with ``alpha * beta**2 * gamma**2 ~= 2`` so that the multiply-adds, which grow as
``d * w**2 * r**2``, roughly double with each step of ``phi``. The paper found ``alpha, beta, gamma
= 1.2, 1.1, 1.15`` by a small grid search at ``phi = 1``; :func:`grid_search` runs such a search
on any proxy task a reader supplies.

In the book: Chapter 5, *Scaling one dimension at a time, and all three together*.
"""
from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Iterable, Sequence

import torch

from .classify import ClassifierConfig, accuracy, train_classifier
from .counting import count_flops, count_parameters, flop_breakdown  # noqa: F401  (re-exported for Part II)
from .efficientnet import B0_STAGES, EfficientNet, StageSpec, scale_stages
from .intervals import Interval, mean_interval

#: The coefficients the EfficientNet paper found (Sec. 3.3).
PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA = 1.2, 1.1, 1.15


@dataclass(frozen=True)
class Coefficients:
    """Depth, width and resolution multipliers of one scaled network."""

    depth: float
    width: float
    resolution: float

    @property
    def flops_factor(self) -> float:
        """The predicted growth of multiply-adds, ``d * w**2 * r**2``."""
        return self.depth * self.width ** 2 * self.resolution ** 2


def check_coefficients(alpha: float, beta: float, gamma: float) -> None:
    """Raise ``ValueError`` unless alpha, beta and gamma are all at least 1 (the paper's rule)."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value >= 1.0:
            raise ValueError(f"{name} must be >= 1 (scaling never shrinks a dimension), got {value}")


def compound_coefficients(
    phi: float, alpha: float = PAPER_ALPHA, beta: float = PAPER_BETA, gamma: float = PAPER_GAMMA
) -> Coefficients:
    """``(alpha**phi, beta**phi, gamma**phi)``: the multipliers at compound coefficient ``phi``."""
    check_coefficients(alpha, beta, gamma)
    return Coefficients(alpha ** phi, beta ** phi, gamma ** phi)


def flops_constraint(alpha: float, beta: float, gamma: float) -> float:
    """``alpha * beta**2 * gamma**2``, which the paper keeps near 2 (cost doubles per ``phi``)."""
    return alpha * beta ** 2 * gamma ** 2


def scaled_resolution(base_resolution: int, resolution_mult: float, multiple: int = 1) -> int:
    """``base_resolution * resolution_mult`` rounded to the nearest multiple of ``multiple``."""
    if base_resolution <= 0 or resolution_mult <= 0 or multiple <= 0:
        raise ValueError("base_resolution, resolution_mult and multiple must be positive")
    return max(multiple, int(round(base_resolution * resolution_mult / multiple)) * multiple)


def scaled_stage_table(
    coefficients: Coefficients, stages: Sequence[StageSpec] = B0_STAGES, divisor: int = 8
) -> list[StageSpec]:
    """The stage table that the rounding rules make of ``coefficients`` (see
    :func:`~effnet_tutorial.efficientnet.scale_stages`).
    """
    return scale_stages(stages, coefficients.width, coefficients.depth, divisor)


def candidate_grid(
    step: float = 0.1, target: float = 2.0, max_alpha: float = 2.0
) -> list[tuple[float, float, float]]:
    """Every ``(alpha, beta, gamma)`` with alpha and beta on a grid and ``alpha*beta^2*gamma^2 = target``.

    alpha and beta run over ``1, 1 + step, ...``; gamma is solved from the constraint (so the
    constraint holds exactly) and the candidate is kept when ``gamma >= 1``.
    """
    if step <= 0 or target < 1:
        raise ValueError(f"step must be > 0 and target >= 1, got {step}, {target}")
    out = []
    n_alpha = int(round((max_alpha - 1) / step))
    for i in range(n_alpha + 1):
        alpha = round(1 + i * step, 10)
        j = 0
        while True:
            beta = round(1 + j * step, 10)
            rest = target / (alpha * beta ** 2)
            if rest < 1 - 1e-12:
                break
            out.append((alpha, beta, round(math.sqrt(rest), 6)))
            j += 1
    return out


@dataclass
class SearchResult:
    """One candidate of a grid search with its scores over seeds."""

    alpha: float
    beta: float
    gamma: float
    scores: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """Mean score over seeds."""
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    def interval(self, confidence: float = 0.95) -> Interval:
        """The mean score with its Student-t interval over the seeds (needs two or more)."""
        return mean_interval(self.scores, confidence)


def grid_search(
    evaluate: Callable[[Coefficients, int], float],
    candidates: Iterable[tuple[float, float, float]],
    seeds: Sequence[int] = (0, 1),
    phi: float = 1.0,
    log: Callable[[str], None] | None = print,
    workers: int = 1,
) -> list[SearchResult]:
    """Score every candidate ``(alpha, beta, gamma)`` at ``phi`` and rank them, best first.

    ``evaluate(coefficients, seed)`` trains and evaluates one network (the caller decides the
    budget; give every candidate the same one) and returns a score where higher is better.
    With ``workers > 1``, ``evaluate`` must be a :class:`ProxyEvaluator`: its runs then go to
    that many processes at once (:meth:`ProxyEvaluator.run_many`), with the same results.
    """
    candidates, seeds = list(candidates), list(seeds)
    if not candidates or not seeds:
        raise ValueError("grid_search needs at least one candidate and one seed")
    jobs = [(compound_coefficients(phi, *triple), seed) for triple in candidates for seed in seeds]
    if workers > 1:
        if not isinstance(evaluate, ProxyEvaluator):
            raise ValueError("grid_search runs in parallel only with a ProxyEvaluator; use workers=1")
        scores = [run.accuracy for run in evaluate.run_many(jobs, workers=workers)]
    else:
        scores = [float(evaluate(c, seed)) for c, seed in jobs]
    results = []
    for k, (alpha, beta, gamma) in enumerate(candidates):
        result = SearchResult(alpha, beta, gamma, scores[k * len(seeds):(k + 1) * len(seeds)])
        if log is not None:
            log(f"[{k + 1}/{len(candidates)}] alpha={alpha:.2f} beta={beta:.2f} gamma={gamma:.3f}: "
                f"{result.mean:.4f} +- {result.std:.4f}")
        results.append(result)
    return sorted(results, key=lambda r: r.mean, reverse=True)


#: A small EfficientNet for proxy tasks on 16-48 px images. It is B0's stage table with its last
#: two downsamplings removed (strides 1) and the last two stages narrowed (112, 160 channels), so
#: the network downsamples 8x and a 20 px image ends on a 3x3 map, not 1x1.
PROXY_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 1, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 1, 112, 1),
    StageSpec(6, 3, 1, 160, 1),
)


def proxy_efficientnet(
    coefficients: Coefficients = Coefficients(1.0, 1.0, 1.0),
    num_classes: int = 16,
    base_width: float = 0.25,
    base_depth: float = 0.5,
    zero_init_residual: bool = True,
    **options,
) -> EfficientNet:
    """The proxy network of Part II, scaled by ``coefficients`` (depth and width only; the
    resolution multiplier applies to the input).

    The base is B0's stage table at a quarter of its width and half its depth: narrow enough that
    widening it pays on the proxy task (at half width, extra width bought nothing within the
    budget of Part II). Channels round to multiples of 2 rather than 8 so that small width steps change the network.
    With ``zero_init_residual`` the last batch norm of every block with a skip connection starts
    with weight 0, so each such block starts as the identity: deep stacks then train as fast as
    shallow ones in the first steps, which matters for the short training budgets of Part II
    (without it, depth-scaled proxies barely learn in one epoch).
    """
    model = EfficientNet(
        width_mult=base_width * coefficients.width, depth_mult=base_depth * coefficients.depth,
        num_classes=num_classes, stages=PROXY_STAGES, stem_channels=32, head_channels=320,
        channel_divisor=2, dropout=options.pop("dropout", 0.1),
        drop_path_rate=options.pop("drop_path_rate", 0.0), **options,
    )
    if zero_init_residual:
        for block in model.modules():
            if getattr(block, "has_skip", False):
                torch.nn.init.zeros_(block.project.bn.weight)
    return model


#: Resolution at which the unscaled proxy network sees the proxy images (generated at 32 px).
PROXY_BASE_RESOLUTION = 20


def proxy_macs(coefficients: Coefficients, base_resolution: int = PROXY_BASE_RESOLUTION) -> int:
    """Multiply-adds of :func:`proxy_efficientnet` scaled by ``coefficients``, after all rounding
    (whole blocks, channels to multiples of 2, whole pixels): what the network really costs."""
    return count_flops(proxy_efficientnet(coefficients), scaled_resolution(base_resolution, coefficients.resolution))


#: The multipliers :func:`match_cost` may re-solve, each with the values it tries by default
#: (width and depth on fine grids, resolution in whole pixels).
MATCH_GRIDS = {
    "width": tuple(round(0.5 + 0.005 * k, 3) for k in range(701)),       # 0.5 .. 4.0
    "depth": tuple(round(1.0 + 0.05 * k, 2) for k in range(141)),       # 1.0 .. 8.0
    "resolution": tuple(range(8, 97)),                                  # pixels
}


def match_cost(
    coefficients: Coefficients,
    target_macs: float,
    solve: str = "width",
    base_resolution: int = PROXY_BASE_RESOLUTION,
    grid: Sequence[float] | None = None,
) -> Coefficients:
    """Re-solve one multiplier so the *rounded* proxy network costs as close to ``target_macs``
    as the rounding allows; the other two multipliers stay as given.

    ``alpha * beta**2 * gamma**2 = 2`` makes candidates equal in cost only before rounding: whole
    blocks, channels in steps of 2 and whole pixels move each one's real cost by up to tens of
    percent on a network this small. Comparing accuracy fairly needs equal real cost, so this
    searches ``grid`` (default :data:`MATCH_GRIDS`; whole pixels for ``"resolution"``) for the
    value whose counted multiply-adds are nearest the target (the smaller one on a tie).
    Check the result with :func:`proxy_macs`: depth and resolution move in steps, so some
    targets cannot be met closely with them.
    """
    if solve not in MATCH_GRIDS:
        raise ValueError(f"solve must be one of {sorted(MATCH_GRIDS)}, got {solve!r}")
    if target_macs <= 0:
        raise ValueError(f"target_macs must be positive, got {target_macs}")
    values = MATCH_GRIDS[solve] if grid is None else tuple(grid)
    if not values:
        raise ValueError("match_cost needs a non-empty grid")

    def candidate(value: float) -> Coefficients:
        if solve == "resolution":
            return replace(coefficients, resolution=value / base_resolution)
        return replace(coefficients, **{solve: value})

    # Cost never falls as one multiplier grows (blocks, channels and map sizes all round
    # monotonically), so a bisection finds the nearest cost after a dozen networks counted.
    return candidate(nearest_cost(sorted(values), lambda v: proxy_macs(candidate(v), base_resolution), target_macs))


def nearest_cost(values: Sequence[float], cost: Callable[[float], float], target: float,
                 window: int = 1) -> float:
    """The value among ``values`` (sorted ascending) whose ``cost`` is nearest ``target`` in ratio.

    ``cost`` must grow with the value, up to local wiggles no wider than ``window`` places (an odd
    pixel count, rounded up at every stride-2 layer, can cost more than the next even one). Bisects
    for the first value costing at least ``target``, then compares the ``window`` values on either
    side by ``|log(cost / target)|``, the smaller value on a tie. Used by :func:`match_cost` and by
    :func:`effnet_tutorial.explorer.match_macs`.
    """
    if not values:
        raise ValueError("nearest_cost needs at least one value")
    if cost(values[-1]) < target:
        raise ValueError(f"target {target:.4g} costs more than the largest value, {values[-1]!r}: widen the grid")
    low, high = 0, len(values) - 1
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if cost(values[mid]) < target else (low, mid)
    nearby = values[max(low - window, 0):low + window + 1]
    return min(nearby, key=lambda v: (abs(math.log(cost(v) / target)), v))


@dataclass
class ProxyRun:
    """One trained and evaluated proxy network: what it was, what it cost, how well it did."""

    coefficients: Coefficients
    seed: int
    resolution: int
    macs: int
    params: int
    accuracy: float
    seconds: float


class ProxyEvaluator:
    """Train :func:`proxy_efficientnet` scaled by some coefficients and return held-out accuracy.

    Every call uses the same data, the same :class:`~effnet_tutorial.classify.ClassifierConfig`
    (only the seed changes), so candidates differ only in their shape. The input resolution is
    ``base_resolution * coefficients.resolution`` rounded to whole pixels. Instances are callables
    ``(coefficients, seed) -> accuracy``, which is what :func:`grid_search` wants; every run is
    also kept in ``runs``.
    """

    def __init__(self, train_images: torch.Tensor, train_labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                 config: ClassifierConfig = ClassifierConfig(),
                 base_resolution: int = PROXY_BASE_RESOLUTION,
                 log: Callable[[str], None] | None = print,
                 zero_init_residual: bool = True) -> None:
        if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
            raise ValueError("images and labels must have the same length in both splits")
        if num_classes < 2 or base_resolution < 8:
            raise ValueError(f"need num_classes >= 2 and base_resolution >= 8, got {num_classes}, {base_resolution}")
        self.train_images, self.train_labels = train_images, train_labels
        self.test_images, self.test_labels = test_images, test_labels
        self.num_classes, self.config, self.base_resolution = num_classes, config, base_resolution
        self.log, self.zero_init_residual = log, zero_init_residual
        self.runs: list[ProxyRun] = []

    def resolution(self, coefficients: Coefficients) -> int:
        """The input resolution for ``coefficients`` (whole pixels)."""
        return scaled_resolution(self.base_resolution, coefficients.resolution)

    def run(self, coefficients: Coefficients, seed: int) -> ProxyRun:
        """Build, train and evaluate one network; log one line; return its :class:`ProxyRun`."""
        torch.manual_seed(seed)  # the initial weights depend on the seed too
        model = proxy_efficientnet(coefficients, num_classes=self.num_classes,
                                   zero_init_residual=self.zero_init_residual)
        res = self.resolution(coefficients)
        config = replace(self.config, seed=seed)
        start = time.perf_counter()
        train_classifier(model, self.train_images, self.train_labels, res, config, log=None)
        acc = accuracy(model, self.test_images, self.test_labels, res)
        seconds = time.perf_counter() - start
        result = ProxyRun(coefficients, seed, res, count_flops(model.cpu(), res),
                          count_parameters(model), acc, seconds)
        self.runs.append(result)
        if self.log is not None:
            self.log(describe_run(result))
        return result

    def run_many(self, jobs: Sequence[tuple[Coefficients, int]], workers: int = 1) -> list[ProxyRun]:
        """Run every ``(coefficients, seed)`` of ``jobs``; return the runs in the order of ``jobs``.

        With ``workers > 1`` the runs go to that many fresh processes at once (``spawn``), each
        with one CPU thread: on a machine with ``workers`` cores this divides the wall time by
        about ``workers``. Every run seeds itself, so the results equal those of
        ``workers=1``; only the order of the log lines (by completion) differs.
        """
        jobs = list(jobs)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers == 1 or len(jobs) < 2:
            return [self.run(c, seed) for c, seed in jobs]
        quiet = ProxyEvaluator(self.train_images, self.train_labels, self.test_images, self.test_labels,
                               self.num_classes, self.config, self.base_resolution, None,
                               self.zero_init_residual)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context,
                                 initializer=_start_worker, initargs=(quiet,)) as pool:
            futures = [pool.submit(_run_in_worker, c, seed) for c, seed in jobs]
            for future in as_completed(futures):
                if self.log is not None:
                    self.log(describe_run(future.result()))
            results = [future.result() for future in futures]
        self.runs.extend(results)
        return results

    def __call__(self, coefficients: Coefficients, seed: int) -> float:
        return self.run(coefficients, seed).accuracy


def describe_run(run: ProxyRun) -> str:
    """One log line for a :class:`ProxyRun`: shape, cost, accuracy, time."""
    c = run.coefficients
    return (f"d={c.depth:.2f} w={c.width:.2f} r={c.resolution:.2f} ({run.resolution} px) seed {run.seed}: "
            f"{run.macs / 1e6:.2f} M MACs, accuracy {run.accuracy:.3f}, {run.seconds:.0f} s")


_WORKER_EVALUATOR: ProxyEvaluator | None = None


def _start_worker(evaluator: ProxyEvaluator) -> None:
    global _WORKER_EVALUATOR
    torch.set_num_threads(1)
    _WORKER_EVALUATOR = evaluator


def _run_in_worker(coefficients: Coefficients, seed: int) -> ProxyRun:
    assert _WORKER_EVALUATOR is not None, "worker started without an evaluator"
    return _WORKER_EVALUATOR.run(coefficients, seed)
