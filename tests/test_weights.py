"""Numerical equivalence with timm, the reference implementation (test dependency only)."""
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.weights import from_timm

from .helpers import max_rel_diff, randomize_

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name,sizes", [
    ("efficientnet_b0", (224, 257)), ("tf_efficientnet_b0", (224, 257)),
    ("efficientnet_b3", (300, 333)), ("tf_efficientnet_b3", (300, 333)),
])
@pytest.mark.slow
def test_outputs_equal_timm_with_converted_weights(name, sizes):
    torch.manual_seed(0)
    ref = randomize_(timm.create_model(name, pretrained=False)).eval()
    ours = et.create_model(name)
    ours.load_state_dict(from_timm(ref.state_dict()), strict=True)
    ours.eval()
    for size in sizes:
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected, got = ref(x), ours(x)
        assert expected.abs().max() > 1e-2, "test input must produce a non-trivial output"
        assert max_rel_diff(got, expected) <= 1e-4, (name, size)


def test_feature_maps_equal_timm_features_only():
    torch.manual_seed(0)
    ref = randomize_(timm.create_model("tf_efficientnet_b0", features_only=True,
                                       out_indices=(2, 3, 4), pretrained=False)).eval()
    ours = et.create_model("tf_efficientnet_b0", features_only=True)
    ours.load_state_dict(from_timm(ref.state_dict()), strict=True)
    ours.eval()
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        for got, expected in zip(ours(x), ref(x)):
            assert got.shape == expected.shape
            assert max_rel_diff(got, expected) <= 1e-4


def test_unknown_keys_are_named():
    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    state["blocks.0.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="blocks.0.0.extra.weight"):
        from_timm(state)


def test_a_converted_b0_does_not_load_into_b1():
    state = from_timm(timm.create_model("efficientnet_b0", pretrained=False).state_dict())
    with pytest.raises(RuntimeError):
        et.create_model("efficientnet_b1").load_state_dict(state)
