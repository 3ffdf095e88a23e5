"""Detection data: the synthetic COCO dataset, the COCO reader's checks, and box-aware
transforms."""
import json
import random
import warnings

import numpy as np
import pytest
import torch

from effnet_tutorial.data.coco import CocoDetection, CocoFormatError, _clip_to_image
from effnet_tutorial.data.shapes import SHAPE_CLASSES, render_scene, write_coco_dataset
from effnet_tutorial.data.transforms import (
    HorizontalFlip,
    RandomScaleCrop,
    ResizePad,
    collate,
    eval_transforms,
    train_transforms,
)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_coco_dataset(root, "train", 6, seed=3, height=96, width=128)
    return root


def test_scenes_are_deterministic_and_boxes_cover_their_objects():
    a, b = render_scene(np.random.default_rng(7)), render_scene(np.random.default_rng(7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert a.image.dtype == np.uint8 and a.image.shape == (256, 256, 3)
    assert ((a.boxes[:, 2] > a.boxes[:, 0]) & (a.boxes[:, 3] > a.boxes[:, 1])).all()
    assert set(a.labels.tolist()) <= set(range(len(SHAPE_CLASSES)))


def test_written_dataset_reads_back_through_the_coco_reader(shapes_root):
    ds = CocoDetection(shapes_root / "images" / "train",
                       shapes_root / "annotations" / "instances_train.json")
    assert len(ds) == 6 and ds.class_names == list(SHAPE_CLASSES)
    assert ds.category_ids == [1, 2, 3, 4]
    rng = np.random.default_rng(3)
    for i in range(6):
        scene = render_scene(rng, 96, 128)
        image, target = ds[i]
        assert image.shape == (3, 96, 128) and image.dtype == torch.uint8
        assert np.array_equal(image.permute(1, 2, 0).numpy(), scene.image)  # PNG is lossless
        torch.testing.assert_close(target["boxes"], torch.from_numpy(scene.boxes))
        assert target["labels"].tolist() == scene.labels.tolist()


def _write(tmp_path, data, images=()):
    (tmp_path / "img").mkdir(exist_ok=True)
    from PIL import Image
    for name, (h, w) in images:
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img" / name)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return tmp_path / "img", path


def _base():
    return {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                       {"id": 2, "file_name": "b.png", "height": 20, "width": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [25, 5, 10, 10]},
                            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [31, 5, 4, 4]},
                            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [2, 2, 0, 5]}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}


def test_reader_clips_drops_with_a_counted_warning_and_keeps_empty_images(tmp_path):
    image_dir, ann = _write(tmp_path, _base(), [("a.png", (20, 30)), ("b.png", (20, 30))])
    with pytest.warns(UserWarning, match="dropped 2 box"):
        ds = CocoDetection(image_dir, ann)
    _, target = ds[0]
    assert target["boxes"].tolist() == [[25.0, 5.0, 30.0, 15.0]]
    assert target["labels"].tolist() == [1]
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


@pytest.mark.parametrize("breakage,message", [
    (lambda d: d.pop("categories"), "missing key"),
    (lambda d: d["annotations"][0].update(category_id=99), "unknown category id 99"),
    (lambda d: d["annotations"][0].update(image_id=5), "unknown image id 5"),
    (lambda d: d["images"][0].pop("width"), "missing key"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"bbox \[1, 2, 3\]"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, "a", 4]), "four numbers"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, True, 4]), "four numbers"),  # not a number
])
def test_malformed_annotations_name_the_file_and_the_problem(tmp_path, breakage, message):
    data = _base()
    breakage(data)
    image_dir, ann = _write(tmp_path, data)
    with pytest.raises(CocoFormatError, match=message) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CocoDetection(image_dir, ann)
    assert "ann.json" in str(err.value)


@pytest.mark.parametrize("xywh,expected", [
    ((2.0, 3.0, 4.0, 5.0), [2.0, 3.0, 6.0, 8.0]),        # inside: xywh -> xyxy
    ((25.0, -5.0, 10.0, 10.0), [25.0, 0.0, 30, 5.0]),    # clipped on the right and at the top
    ((-4.0, 12.0, 50.0, 50.0), [0.0, 12.0, 30, 20]),     # covers the image: clipped all round
    ((31.0, 5.0, 4.0, 4.0), None),                       # entirely right of the image
    ((2.0, 2.0, 0.0, 5.0), None),                        # zero width
    ((-9.0, 2.0, 9.0, 5.0), None),                       # ends at the left edge: no area left
])
def test_clip_to_image(xywh, expected):
    assert _clip_to_image(xywh, width=30, height=20) == expected


def test_unreadable_images_are_named(tmp_path):
    image_dir, ann = _write(tmp_path, _base(), [("b.png", (20, 30))])
    (image_dir / "a.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDetection(image_dir, ann)
    with pytest.raises(CocoFormatError, match="a.png"):
        ds[0]


def _box_image(h=60, w=80, box=(10, 20, 50, 40)):
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([0])}
    return image, target


def _white_box(image):
    ys, xs = torch.nonzero(image[0] > 200, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_flip_moves_boxes_with_pixels_and_twice_is_identity():
    image, target = _box_image()
    flip = HorizontalFlip(p=1.0)
    flipped, ft = flip(image, target)
    torch.testing.assert_close(ft["boxes"][0], _white_box(flipped))
    back, bt = flip(flipped, ft)
    assert torch.equal(back, image) and torch.equal(bt["boxes"], target["boxes"])


def test_resize_pad_round_trip_to_original_pixels():
    image, target = _box_image(h=100, w=200, box=(20, 30, 120, 70))
    out, t = ResizePad(64)(image, target)
    assert out.shape == (3, 64, 64)
    torch.testing.assert_close(t["boxes"] * t["scale"], target["boxes"], atol=1e-4, rtol=0)
    assert (t["boxes"][0] - _white_box(out)).abs().max() <= 1.0


@pytest.mark.parametrize("seed", range(8))
def test_scale_jitter_crop_keeps_boxes_on_their_pixels(seed):
    image, target = _box_image(h=120, w=160, box=(40, 30, 120, 90))
    out, t = RandomScaleCrop(96, (0.5, 2.0), rng=random.Random(seed))(image, target)
    assert out.shape == (3, 96, 96)
    if len(t["boxes"]):
        assert (t["boxes"][0] - _white_box(out)).abs().max() <= 1.5


def test_pipelines_and_collate(shapes_root):
    ds = CocoDetection(shapes_root / "images" / "train",
                       shapes_root / "annotations" / "instances_train.json",
                       transform=train_transforms(64, seed=0))
    images, targets = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2
    assert images.abs().max() < 5  # normalised
    image, target = eval_transforms(64)(*_box_image())
    assert image.shape == (3, 64, 64) and "scale" in target
