"""Checkpoint files describe themselves, load with weights_only=True, and fail with a message that
names the file: load_trained, read_checkpoint, create_model(checkpoint_path=...)."""
import pickle
import warnings

import pytest
import torch

from effnet_tutorial import create_model
from effnet_tutorial.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_meta,
    describe_model,
    load_trained,
    read_checkpoint,
)
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.shapes import write_coco_dataset
from effnet_tutorial.data.transforms import train_transforms
from effnet_tutorial.train import SeededAugmentation, TrainConfig, Trainer

TINY = dict(fpn_channels=16, fpn_repeats=1, head_repeats=1, image_size=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 64-pixel, 4-class D0 trained for one step: its output folder."""
    root = tmp_path_factory.mktemp("data")
    write_coco_dataset(root, "train", 4, seed=1, height=64, width=64, max_objects=2)
    raw = CocoDetection(root / "images" / "train", root / "annotations" / "instances_train.json")
    torch.manual_seed(0)
    model = create_model("tf_efficientdet_d0", num_classes=raw.num_classes, **TINY)
    config = TrainConfig(epochs=1, batch_size=2, lr=0.01, num_workers=0, progress=False)
    out = tmp_path_factory.mktemp("run")
    Trainer(model, SeededAugmentation(raw, train_transforms(64), 0), config, out).fit(max_steps=1)
    return out


def test_training_checkpoint_loads_weights_only_and_describes_itself(run):
    state = torch.load(run / "last.pth", weights_only=True)
    meta = state["meta"]
    assert meta["format_version"] == FORMAT_VERSION
    assert (meta["model"], meta["image_size"], meta["num_classes"]) == ("tf_efficientdet_d0", 64, 4)
    assert meta["model_options"] == {"fpn_channels": 16, "fpn_repeats": 1, "head_repeats": 1}
    assert meta["class_names"] == ["circle", "square", "triangle", "cross"]
    assert meta["batch_size"] == 2 and meta["world_size"] == 1
    assert meta["train_config"]["lr"] == 0.01 and state["step"] == 1
    small = torch.load(run / "model.pth", weights_only=True)
    assert set(small) == {"meta", "model"} and small["meta"]["weights"] == "ema"
    assert (run / "model.pth").stat().st_size < (run / "last.pth").stat().st_size / 2


def test_create_model_loads_a_training_checkpoint_with_its_ema_weights(run):
    model = create_model("tf_efficientdet_d0", num_classes=4, checkpoint_path=str(run / "last.pth"),
                         **TINY)
    ema = torch.load(run / "last.pth", weights_only=True)["ema"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema[name]), name


@pytest.mark.slow
def test_load_trained_builds_the_model_the_checkpoint_describes(run):
    model = load_trained(run / "last.pth")
    assert model.config.image_size == 64 and model.num_classes == 4 and not model.training
    assert model.class_names == ["circle", "square", "triangle", "cross"]
    assert describe_model(model) == {k: checkpoint_meta(read_checkpoint(run / "last.pth"))[k]
                                     for k in ("model", "model_options", "image_size",
                                               "num_classes")}
    small = load_trained(run / "model.pth")
    for a, b in zip(model.state_dict().values(), small.state_dict().values()):
        assert torch.equal(a, b)
    assert load_trained(run / "last.pth", image_size=128).config.image_size == 128  # an override
    raw = load_trained(run / "last.pth", use_ema=False).state_dict()
    trained = torch.load(run / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(raw[k], trained[k]) for k in raw)


def test_an_argument_that_contradicts_the_checkpoint_is_an_error(run):
    with pytest.raises(CheckpointError, match="tf_efficientdet_d0.*tf_efficientdet_d1"):
        load_trained(run / "last.pth", model_name="tf_efficientdet_d1")
    with pytest.raises(CheckpointError, match="class count 4.*3 was asked"):
        load_trained(run / "last.pth", num_classes=3)
    with pytest.raises(ValueError, match="classifier.*tf_efficientdet_d0"):
        load_trained(run / "last.pth", model_name="efficientnet_b0")
    with pytest.raises(CheckpointError, match="load_trained"):  # another architecture
        create_model("tf_efficientdet_d0", num_classes=4, checkpoint_path=str(run / "last.pth"))


def test_a_plain_state_dict_gives_its_class_count_and_needs_a_model_name(tmp_path):
    four = create_model("tf_efficientdet_d0", num_classes=4, image_size=64)
    torch.save(four.state_dict(), tmp_path / "weights.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no re-initialised 90-class head
        model = load_trained(tmp_path / "weights.pth", "tf_efficientdet_d0", image_size=64)
    assert model.num_classes == 4 and model.class_names is None
    with pytest.raises(CheckpointError, match="--model"):
        load_trained(tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="does not fit a tf_efficientdet_d1"):
        load_trained(tmp_path / "weights.pth", "tf_efficientdet_d1")


def test_fine_tuning_to_another_class_count_still_reinitialises_the_head(run):
    with pytest.warns(UserWarning, match="class head re-initialised"):
        model = create_model("tf_efficientdet_d0", num_classes=2,
                             checkpoint_path=str(run / "model.pth"), **TINY)
    assert model.num_classes == 2


class NotAState:
    pass


@pytest.mark.parametrize("kind, message", [
    ("text", "is a text file"), ("truncated", "truncated or corrupted"), ("empty", "is empty"),
    ("pickle", "Python objects other than tensors"), ("list", "holds a list"),
    ("folder", "is a folder"), ("missing", "not found"),
])
def test_unreadable_checkpoints_are_named_and_explained(tmp_path, run, kind, message):
    path = tmp_path / "bad.pth"
    if kind == "text":
        path.write_text("epoch 3: loss 0.4\n")
    elif kind == "truncated":
        data = (run / "model.pth").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(NotAState()))
    elif kind == "list":
        torch.save([1, 2], path)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises((CheckpointError, FileNotFoundError), match=message) as caught:
        load_trained(path, "tf_efficientdet_d0")
    assert str(path) in str(caught.value)


def test_create_model_refuses_options_that_would_be_ignored():
    with pytest.raises(ValueError, match="features_only.*num_classes"):
        create_model("efficientnet_b0", num_classes=3, features_only=True)
    with pytest.raises(ValueError, match="classifier.*tf_efficientdet_d0"):
        create_model("efficientnet_b0", image_size=64, pretrained=False)


def test_a_failed_download_names_the_file_not_the_machines_cache_path(monkeypatch, capsys, tmp_path):
    import urllib.error

    import torch

    from effnet_tutorial.checkpoints import download_checkpoint

    def offline(url, *args, **kwargs):
        print(f'Downloading: "{url}" to {tmp_path}/cache/x.pth')  # what torch hub prints
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="checkpoint_path"):
        download_checkpoint("https://example.org/releases/d0-1234abcd.pth", model_dir=str(tmp_path))
    out = capsys.readouterr()
    assert str(tmp_path) not in out.out + out.err
    assert "d0-1234abcd.pth" in out.err


def test_half_precision_file_is_half_the_size_and_loads_as_float32(run, tmp_path):
    from effnet_tutorial.checkpoints import write_half_precision

    half = write_half_precision(run / "model.pth", tmp_path / "half.pth")
    assert half.stat().st_size < 0.6 * (run / "model.pth").stat().st_size
    full, small = load_trained(run / "model.pth"), load_trained(half)
    assert all(p.dtype == torch.float32 for p in small.parameters())
    assert small.class_names == full.class_names and small.model_name == full.model_name
    for (name, a), (_, b) in zip(full.state_dict().items(), small.state_dict().items()):
        if a.is_floating_point():
            assert torch.equal(a.half().float(), b), name  # rounded once to float16, nothing else
    with pytest.raises(FileExistsError, match="exists"):
        write_half_precision(run / "model.pth", half)  # nothing is overwritten


def test_the_shipped_detector_is_chapter_14s_cpu_run():
    from effnet_tutorial.checkpoints import BOOK_DETECTORS, book_detector
    from effnet_tutorial.recipes import CPU_SHAPES

    model = book_detector("d0_shapes_256")
    assert model.model_name == "efficientdet_d0" and not model.training
    assert model.class_names == ["circle", "square", "triangle", "cross"]
    assert model.config.image_size == CPU_SHAPES.image_size
    with pytest.raises(KeyError, match="d0_shapes_256"):
        book_detector("d7_coco")
    assert set(BOOK_DETECTORS) == {"d0_shapes_256"}
