"""An explorer for compound scaling: what phi, alpha, beta and gamma do to an EfficientNet.

:func:`explore` turns ``(phi, alpha, beta, gamma)`` into everything Tan & Le (2019, Sec. 3.3)
talk about: the depth, width and resolution multipliers ``alpha**phi``, ``beta**phi`` and
``gamma**phi``, the input resolution, the rounded stage table, and the parameters and multiply-adds
of the network that results, counted exactly on a model built on the meta device (no memory, no
weights). :func:`explorer_panel` puts sliders on it (Jupyter only, needs ``ipywidgets``);
:func:`explorer_figure` draws the same relationships as a static figure for the printed book.

Networks of equal multiply-adds can still differ in latency and activation memory
(:mod:`~effnet_tutorial.footprint` measures both). :func:`match_macs` scales B0 along one
dimension only, solving its multiplier so that the *realised* multiply-adds (after rounding)
come as close as possible to a target; :func:`equal_cost_networks` does so for depth, width and
resolution at the cost of the paper's triple at a given phi; :func:`preset_network` describes a
released member the same way.

In the book: Chapter 7, *An explorer*.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

from .counting import count_flops, count_parameters
from .efficientnet import (
    B0_HEAD_CHANNELS,
    B0_STAGES,
    B0_STEM_CHANNELS,
    PRESETS,
    EfficientNet,
    StageSpec,
    round_filters,
)
from .scaling import (
    PAPER_ALPHA,
    PAPER_BETA,
    PAPER_GAMMA,
    Coefficients,
    compound_coefficients,
    flops_constraint,
    nearest_cost,
    scaled_resolution,
    scaled_stage_table,
)

#: (label, alpha, beta, gamma) triples that all satisfy ``alpha * beta**2 * gamma**2 = 2``:
#: the paper's (approximately) and the three that scale one dimension only.
DEFAULT_TRIPLES: tuple[tuple[str, float, float, float], ...] = (
    ("paper (1.2, 1.1, 1.15)", PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA),
    ("depth only (2, 1, 1)", 2.0, 1.0, 1.0),
    ("width only (1, sqrt 2, 1)", 1.0, math.sqrt(2.0), 1.0),
    ("resolution only (1, 1, sqrt 2)", 1.0, 1.0, math.sqrt(2.0)),
)


@dataclass(frozen=True)
class StageRow:
    """One row of the scaled network's table, in the layout of the paper's Table 1."""

    stage: int
    operator: str
    resolution: int  # input resolution of the stage (height = width)
    channels: int  # output channels
    layers: int


@dataclass(frozen=True)
class Exploration:
    """Everything :func:`explore` computes for one ``(phi, alpha, beta, gamma)``."""

    phi: float
    alpha: float
    beta: float
    gamma: float
    coefficients: Coefficients  # depth, width, resolution multipliers
    constraint: float  # alpha * beta**2 * gamma**2
    resolution: int  # input image side
    params: int
    macs: int
    base_macs: int  # the unscaled network (phi = 0) at base_resolution
    stage_table: tuple[StageRow, ...]

    @property
    def predicted_macs(self) -> float:
        """The cost law without rounding, ``base_macs * d * w**2 * r**2``."""
        return self.base_macs * self.coefficients.flops_factor

    @property
    def macs_ratio(self) -> float:
        """Measured multiply-adds over those of the unscaled network."""
        return self.macs / self.base_macs

    @property
    def total_layers(self) -> int:
        """Number of MBConv blocks."""
        return sum(row.layers for row in self.stage_table[1:-1])


def _check_inputs(phi: float, base_resolution: int) -> None:
    if not isinstance(phi, (int, float)) or not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi!r}")
    if not isinstance(base_resolution, int) or base_resolution < 32:
        raise ValueError(f"base_resolution must be an int >= 32, got {base_resolution!r}")


@lru_cache(maxsize=512)
def _counts(width: float, depth: float, resolution: int) -> tuple[int, int]:
    """Parameters and multiply-adds of ``EfficientNet(width, depth)`` at ``resolution`` (meta device)."""
    with torch.device("meta"):
        model = EfficientNet(width_mult=width, depth_mult=depth)
    return count_parameters(model), count_flops(model, resolution)


def stage_rows(
    coefficients: Coefficients, resolution: int, stages: Sequence[StageSpec] = B0_STAGES
) -> tuple[StageRow, ...]:
    """The scaled network as the rows of the paper's Table 1: stem, seven MBConv stages, head.

    Each stride-2 layer maps a side ``n`` to ``ceil(n / 2)``.
    """
    width = coefficients.width
    rows = [StageRow(1, "Conv3x3", resolution, round_filters(B0_STEM_CHANNELS, width), 1)]
    side = math.ceil(resolution / 2)
    for i, s in enumerate(scaled_stage_table(coefficients, stages), start=2):
        rows.append(StageRow(i, f"MBConv{s.expand_ratio}, k{s.kernel_size}x{s.kernel_size}",
                             side, s.out_channels, s.repeats))
        side = math.ceil(side / s.stride)
    rows.append(StageRow(len(rows) + 1, "Conv1x1 & Pooling & FC", side,
                         round_filters(B0_HEAD_CHANNELS, width), 1))
    return tuple(rows)


def explore(
    phi: float,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
    base_resolution: int = 224,
    resolution_multiple: int = 1,
) -> Exploration:
    """Scale EfficientNet-B0 by ``d = alpha**phi``, ``w = beta**phi``, ``r = gamma**phi`` and count it.

    The network is ``EfficientNet(width_mult=w, depth_mult=d)`` (channels rounded to multiples
    of 8, repeats rounded up) at input side ``base_resolution * r`` rounded to a multiple of
    ``resolution_multiple``. Parameters and multiply-adds are counted exactly on the meta device.

    Raises ``ValueError`` if alpha, beta or gamma is below 1, phi is not finite, or the base
    resolution is not an int of at least 32.
    """
    _check_inputs(phi, base_resolution)
    coefficients = compound_coefficients(phi, alpha, beta, gamma)  # checks alpha, beta, gamma >= 1
    resolution = scaled_resolution(base_resolution, coefficients.resolution, resolution_multiple)
    params, macs = _counts(coefficients.width, coefficients.depth, resolution)
    _, base_macs = _counts(1.0, 1.0, base_resolution)
    return Exploration(
        phi=float(phi), alpha=float(alpha), beta=float(beta), gamma=float(gamma),
        coefficients=coefficients, constraint=flops_constraint(alpha, beta, gamma),
        resolution=resolution, params=params, macs=macs, base_macs=base_macs,
        stage_table=stage_rows(coefficients, resolution),
    )


@dataclass(frozen=True)
class ScaledNetwork:
    """B0 scaled by explicit depth and width multipliers and fed ``resolution`` pixels, counted."""

    label: str
    depth: float
    width: float
    resolution: int
    params: int
    macs: int

    def build(self) -> EfficientNet:
        """The network (on the current default device: wrap in ``torch.device("meta")`` to count)."""
        return EfficientNet(width_mult=self.width, depth_mult=self.depth)


Dimension = Literal["depth", "width", "resolution"]


def scaled_network(label: str, depth: float = 1.0, width: float = 1.0,
                   resolution: int = 224) -> ScaledNetwork:
    """Count ``EfficientNet(width_mult=width, depth_mult=depth)`` at ``resolution`` pixels."""
    if depth < 1.0 or width < 1.0 or resolution < 32:
        raise ValueError(f"need depth, width >= 1 and resolution >= 32, got {depth}, {width}, {resolution}")
    params, macs = _counts(float(width), float(depth), int(resolution))
    return ScaledNetwork(label, float(depth), float(width), int(resolution), params, macs)


def match_macs(
    target_macs: float,
    dimension: Dimension,
    base_resolution: int = 224,
    label: str | None = None,
    max_multiplier: float = 8.0,
) -> ScaledNetwork:
    """B0 scaled along ``dimension`` alone, its multiplier solved so that the realised
    multiply-adds (blocks rounded up, channels to multiples of 8, whole pixels) are as close to
    ``target_macs`` as that dimension allows.

    Depth moves in steps (a stage of ``n`` blocks changes at multipliers ``k / n``), width in
    steps of 0.005 before rounding, resolution by one pixel; the search bisects over those
    steps, as the realised cost grows with each multiplier.
    """
    if dimension == "depth":
        repeats = sorted({s.repeats for s in B0_STAGES})
        steps = sorted({k / n for n in repeats for k in range(n, int(n * max_multiplier) + 1)})
        net = nearest_cost(steps, lambda d: _counts(1.0, d, base_resolution)[1], target_macs)
        found = scaled_network(label or "depth only", depth=net, resolution=base_resolution)
    elif dimension == "width":
        steps = [1 + 0.005 * i for i in range(int((max_multiplier - 1) / 0.005) + 1)]
        net = nearest_cost(steps, lambda w: _counts(w, 1.0, base_resolution)[1], target_macs)
        found = scaled_network(label or "width only", width=net, resolution=base_resolution)
    elif dimension == "resolution":
        steps = list(range(base_resolution, int(base_resolution * max_multiplier) + 1))
        net = nearest_cost(steps, lambda px: _counts(1.0, 1.0, px)[1], target_macs, window=8)
        found = scaled_network(label or "resolution only", resolution=net)
    else:
        raise ValueError(f"dimension must be 'depth', 'width' or 'resolution', got {dimension!r}")
    return found


def equal_cost_networks(phi: float = 2.0, base_resolution: int = 224) -> tuple[ScaledNetwork, ...]:
    """The paper's triple at ``phi``, then depth only, width only and resolution only, each
    solved by :func:`match_macs` to the paper network's realised multiply-adds."""
    e = explore(phi, base_resolution=base_resolution)
    paper = ScaledNetwork(f"paper (1.2, 1.1, 1.15), phi={phi:g}", e.coefficients.depth,
                          e.coefficients.width, e.resolution, e.params, e.macs)
    return (paper,) + tuple(match_macs(e.macs, dim, base_resolution)
                            for dim in ("depth", "width", "resolution"))


def preset_network(name: str, base_resolution: int = 224) -> ScaledNetwork:
    """A released member (``"b0"`` ... ``"b7"``) as a :class:`ScaledNetwork`; its resolution
    is the released one, scaled by ``base_resolution / 224`` (rounded) for a smaller run."""
    p = PRESETS[name]
    resolution = round(p.resolution * base_resolution / 224)
    return scaled_network(name.upper(), p.depth_mult, p.width_mult, resolution)


def format_exploration(e: Exploration) -> str:
    """A plain-text report of one :class:`Exploration` (what the panel and the book print)."""
    c = e.coefficients
    lines = [
        (f"phi={e.phi:g}  alpha={e.alpha:g}  beta={e.beta:g}  gamma={e.gamma:g}  "
        f"alpha*beta^2*gamma^2={e.constraint:.3f}"),
        (f"depth x{c.depth:.3f}  width x{c.width:.3f}  resolution x{c.resolution:.3f} -> "
        f"{e.resolution}x{e.resolution}"),
        f"params {e.params:,}   multiply-adds {e.macs:,} ({e.macs / 1e9:.3f} B)",
        f"MACs / B0's: measured {e.macs_ratio:.3f}, cost law d*w^2*r^2 {c.flops_factor:.3f}",
        "",
        f"{'stage':>5}  {'operator':<24}{'resolution':>10}{'channels':>10}{'layers':>8}",
    ]
    lines += [f"{r.stage:>5}  {r.operator:<24}{r.resolution:>10}{r.channels:>10}{r.layers:>8}"
              for r in e.stage_table]
    return "\n".join(lines)


def explorer_panel(
    phi: float = 1.0,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
    base_resolution: int = 224,
):
    """Sliders for phi, alpha, beta and gamma above a live :func:`format_exploration` report.

    Needs a running Jupyter kernel and ``ipywidgets`` (imported here, so the package does not
    depend on it). Returns the ``ipywidgets.VBox``; display it as the last line of a cell.
    """
    import ipywidgets as widgets  # optional dependency, only for the live panel

    style = {"description_width": "60px"}
    layout = widgets.Layout(width="420px")
    sliders = {
        "phi": widgets.FloatSlider(value=phi, min=0.0, max=7.0, step=0.1, description="phi"),
        "alpha": widgets.FloatSlider(value=alpha, min=1.0, max=2.0, step=0.01, description="alpha"),
        "beta": widgets.FloatSlider(value=beta, min=1.0, max=1.5, step=0.01, description="beta"),
        "gamma": widgets.FloatSlider(value=gamma, min=1.0, max=1.5, step=0.01, description="gamma"),
    }
    for s in sliders.values():
        s.style, s.layout, s.continuous_update = style, layout, False
    out = widgets.Output()

    def update(_change=None) -> None:
        values = {k: s.value for k, s in sliders.items()}
        with out:
            out.clear_output(wait=True)
            try:
                print(format_exploration(explore(base_resolution=base_resolution, **values)))
            except ValueError as err:
                print(f"invalid input: {err}")

    for s in sliders.values():
        s.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox([sliders["phi"], sliders["alpha"]]),
                         widgets.HBox([sliders["beta"], sliders["gamma"]]), out])


def constraint_gamma(alpha, beta, target: float = 2.0):
    """The gamma that makes ``alpha * beta**2 * gamma**2 == target`` (works on arrays too)."""
    return (target / (alpha * beta ** 2)) ** 0.5


def explorer_figure(
    triples: Sequence[tuple[str, float, float, float]] = DEFAULT_TRIPLES,
    phis: Sequence[float] = tuple(range(7)),
    base_resolution: int = 224,
    target: float = 2.0,
    ax: Sequence | None = None,
):
    """The explorer as a static figure: parameters and multiply-adds against phi for several
    ``(label, alpha, beta, gamma)`` triples, and the constraint surface ``alpha*beta^2*gamma^2 = target``
    drawn as gamma over the (alpha, beta) plane.

    Returns the matplotlib ``Figure`` (matplotlib is imported here, not by the package).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    else:
        fig = ax[0].figure
    colors = {}
    for label, a, b, g in triples:
        runs = [explore(p, a, b, g, base_resolution) for p in phis]
        line, = ax[0].plot(phis, [e.params / 1e6 for e in runs], "o-", label=label)
        ax[1].plot(phis, [e.macs / 1e9 for e in runs], "o-", label=label, color=line.get_color())
        colors[label] = line.get_color()
    base = explore(0, base_resolution=base_resolution).macs / 1e9
    ax[1].plot(phis, [base * target ** p for p in phis], "k--", lw=1, label=f"B0 x {target:g}^phi")
    for a_, title in ((ax[0], "parameters (millions)"), (ax[1], "multiply-adds (billions)")):
        a_.set_yscale("log")
        a_.set_xlabel("phi")
        a_.set_title(title)
        a_.grid(alpha=0.3, which="both")
    ax[1].legend(fontsize=8)

    alphas, betas = np.linspace(1.0, 2.0, 201), np.linspace(1.0, 1.45, 201)
    A, B = np.meshgrid(alphas, betas)
    G = constraint_gamma(A, B, target)
    G = np.where(G >= 1.0, G, np.nan)  # gamma < 1 would shrink the resolution: not allowed
    cs = ax[2].contourf(A, B, G, levels=np.linspace(1.0, math.sqrt(target), 13), cmap="viridis")
    fig.colorbar(cs, ax=ax[2], label="gamma", format="%.2f")
    for label, a, b, g in triples:
        if abs(flops_constraint(a, b, g) - target) < 0.1 and a <= 2.0 and b <= 1.45:
            ax[2].plot(a, b, "o", mec="white", ms=9, color=colors[label], clip_on=False, zorder=5)
            ax[2].annotate(label.split(" (")[0], (a, b), textcoords="offset points",
                           xytext=(-60, 8) if a > 1.8 else (6, 6),
                           color="white" if g > 1.2 else "black", fontsize=8)
    ax[2].set_xlim(1.0, 2.0)
    ax[2].set_ylim(1.0, 1.45)
    ax[2].set_xlabel("alpha (depth)")
    ax[2].set_ylabel("beta (width)")
    ax[2].set_title(f"gamma solving alpha*beta^2*gamma^2 = {target:g}")
    fig.tight_layout()
    return fig
