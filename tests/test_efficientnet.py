import pytest
import torch

import effnet_tutorial as et
from effnet_tutorial.efficientnet import (B0_STAGES, PAPER_FIGURES, PRESETS, native_resolution,
                                          round_filters, round_repeats, scale_stages)

# timm's parameter counts (1000 classes), identical for efficientnet_* and tf_efficientnet_*.
TIMM_PARAMS = {
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232, "b4": 19_341_616,
    "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960, "b8": 87_413_142, "l2": 480_309_308,
}


def meta_model(name: str, **kw):
    with torch.device("meta"):
        return et.create_model(name, **kw)


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
@pytest.mark.parametrize("prefix", ["efficientnet_", "tf_efficientnet_"])
def test_parameter_counts_equal_timm(prefix, variant):
    assert et.count_parameters(meta_model(prefix + variant)) == TIMM_PARAMS[variant]


def test_b0_flops_within_three_percent_of_the_paper():
    macs = et.count_flops(et.create_model("efficientnet_b0"), 224)
    assert abs(macs / 0.39e9 - 1) < 0.03
    assert macs == 385_814_752


def test_flops_follow_the_papers_table_for_every_preset():
    for v, fig in PAPER_FIGURES.items():
        macs = et.count_flops(meta_model(f"efficientnet_{v}"), native_resolution(v))
        assert abs(macs / (fig.flops_billions * 1e9) - 1) < 0.06, v


def test_b1_and_b3_stage_tables():
    b1 = scale_stages(B0_STAGES, 1.0, 1.1)
    assert [s.repeats for s in b1] == [2, 3, 3, 4, 4, 5, 2]
    b3 = scale_stages(B0_STAGES, 1.2, 1.4)
    assert [s.out_channels for s in b3] == [24, 32, 48, 96, 136, 232, 384]
    assert round_filters(32, 1.2) == 40 and round_filters(1280, 1.2) == 1536
    assert round_repeats(3, 1.8) == 6


def test_l2_stage_table_matches_the_reference():
    l2 = scale_stages(B0_STAGES, PRESETS["l2"].width_mult, PRESETS["l2"].depth_mult)
    assert [s.out_channels for s in l2] == [72, 104, 176, 344, 480, 824, 1376]
    assert [s.repeats for s in l2] == [6, 11, 11, 16, 16, 22, 6]


def test_feature_maps_at_strides_8_16_32():
    model = et.create_model("efficientnet_b0", features_only=True).eval()
    maps = model(torch.zeros(1, 3, 512, 512))
    assert [tuple(m.shape[1:]) for m in maps] == [(40, 64, 64), (112, 32, 32), (320, 16, 16)]
    assert model.feature_channels == [40, 112, 320]
    odd = model(torch.zeros(1, 3, 333, 333))  # ceil halving: 167, 84, 42, 21, 11
    assert [m.shape[-1] for m in odd] == [42, 21, 11]


def test_stochastic_depth_schedule_is_linear_in_the_block_index():
    model = et.create_model("efficientnet_b0", drop_path_rate=0.2)
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 16
    for i, b in enumerate(blocks):
        if b.has_skip:
            assert b.drop_path.rate == pytest.approx(0.2 * i / 16)


def test_classifier_output_and_pooled_features():
    model = et.create_model("efficientnet_b0", num_classes=10).eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    headless = et.create_model("efficientnet_b0", num_classes=0).eval()
    assert headless(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


def test_unknown_names_and_options_are_explained():
    with pytest.raises(ValueError, match="efficientnet_b0"):
        et.create_model("efficientnet_b9")
    with pytest.raises(ValueError, match="valid options"):
        et.create_model("efficientnet_b0", widht_mult=2.0)
    with pytest.raises(ValueError, match="padding"):
        et.create_model("efficientnet_b0", padding="valid")
    with pytest.raises(ValueError, match="num_classes"):
        et.create_model("efficientnet_b0", num_classes=-1)


def test_wrong_input_rank_or_channels_is_explained():
    model = et.create_model("efficientnet_b0").eval()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 1, 32, 32))


def test_list_models_names_every_variant():
    names = et.list_models()
    assert "efficientnet_l2" in names and "tf_efficientnet_b8" in names
    assert "efficientnet_lite4" in names and "tf_efficientnet_lite0" in names
    assert len([n for n in names if "efficientnet_" in n]) == 30  # (B0-B8, L2, Lite0-4) x 2 styles


def test_count_flops_rejects_bad_sizes():
    with pytest.raises(ValueError, match="input_size"):
        et.count_flops(et.create_model("efficientnet_b0"), (0, 224))
