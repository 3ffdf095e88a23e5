"""The explorer of Chapter 7: its numbers agree with the package's models and the cost law."""
from __future__ import annotations

import math

import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import explorer as ex
from effnet_tutorial.scaling import flops_constraint


def test_phi_zero_is_b0():
    e = ex.explore(0)
    assert (e.params, e.macs, e.resolution) == (5_288_548, 385_814_752, 224)
    assert e.base_macs == e.macs and e.macs_ratio == 1.0
    assert e.total_layers == 16
    assert [r.channels for r in e.stage_table] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert [r.resolution for r in e.stage_table] == [224, 112, 112, 56, 28, 14, 14, 7, 7]


def test_matches_a_directly_built_model():
    e = ex.explore(1.5, 1.2, 1.1, 1.15)
    c = e.coefficients
    with torch.device("meta"):
        model = et.EfficientNet(width_mult=c.width, depth_mult=c.depth)
    assert e.params == et.count_parameters(model)
    assert e.macs == et.count_flops(model, e.resolution)
    assert e.resolution == round(224 * 1.15 ** 1.5)
    assert e.total_layers == sum(s.repeats for s in model.stage_specs)


def test_constraint_and_predicted_cost():
    e = ex.explore(2, 1.2, 1.1, 1.15)
    assert e.constraint == pytest.approx(flops_constraint(1.2, 1.1, 1.15)) == pytest.approx(1.9203, abs=1e-4)
    assert e.predicted_macs == pytest.approx(e.base_macs * 1.9203 ** 2, rel=1e-3)
    assert ex.constraint_gamma(1.2, 1.1) == pytest.approx(math.sqrt(2 / (1.2 * 1.21)))


@pytest.mark.parametrize("triple", [(1.2, 1.1, 1.15), (1.0, 1.0, math.sqrt(2)), (1.0, math.sqrt(2), 1.0)])
def test_monotone_in_phi(triple):
    runs = [ex.explore(p, *triple) for p in (0, 1, 2, 3)]
    assert all(a.macs < b.macs for a, b in zip(runs, runs[1:]))
    assert all(a.params <= b.params for a, b in zip(runs, runs[1:]))
    assert all(a.resolution <= b.resolution for a, b in zip(runs, runs[1:]))


def test_resolution_only_keeps_parameters():
    e = ex.explore(3, 1.0, 1.0, math.sqrt(2))
    assert e.params == 5_288_548 and e.resolution == round(224 * 2 ** 1.5)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.9}, {"beta": 0.5}, {"gamma": 0.99}])
def test_coefficients_below_one_are_rejected(kwargs):
    with pytest.raises(ValueError, match="must be >= 1"):
        ex.explore(1, **kwargs)


@pytest.mark.parametrize("phi, res", [(float("nan"), 224), (float("inf"), 224), ("1", 224), (1, 16), (1, 224.0)])
def test_bad_phi_or_resolution_is_rejected(phi, res):
    with pytest.raises(ValueError):
        ex.explore(phi, base_resolution=res)


def test_report_mentions_the_numbers():
    text = ex.format_exploration(ex.explore(0))
    assert "5,288,548" in text and "385,814,752" in text and "224x224" in text


def test_figure_and_panel_build(capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = ex.explorer_figure(triples=ex.DEFAULT_TRIPLES[:1], phis=(0, 1))
    assert len(fig.axes) == 4  # three panels and the colour bar
    widgets = pytest.importorskip("ipywidgets")
    panel = ex.explorer_panel(phi=0)  # outside a kernel the Output widget lets prints through
    assert isinstance(panel, widgets.VBox) and "5,288,548" in capsys.readouterr().out
    panel.children[0].children[0].value = 2.0  # moving the phi slider re-computes the report
    assert "phi=2 " in capsys.readouterr().out
