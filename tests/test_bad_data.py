"""Bad inputs a new user tried: each is handled correctly or refused, when the dataset is opened,
with a message naming the file, the entry and what is wrong (issue "Nothing lost, nothing
silently wrong"). The COCO reader, image decoding, and the input checks of predict and evaluate.
"""
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from effnet_tutorial import create_model
from effnet_tutorial.data.coco import CocoDetection, CocoFormatError, read_coco_annotations
from effnet_tutorial.data.transforms import ImageFileError, as_chw_tensor, read_rgb_image
from effnet_tutorial.evaluate import (
    check_evaluation,
    coco_evaluate,
    evaluate_model,
    predict_dataset,
    to_coco_results,
)
from effnet_tutorial.inference import predict

H, W = 32, 48


def _valid() -> dict:
    """Two 32x48 images, three boxes inside them, two categories with a gap in their ids."""
    return {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                       {"id": 2, "file_name": "b.png", "height": H, "width": W}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 12, 10],
                 "area": 120, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 8, 16, 20],
                 "area": 320, "iscrowd": 0},
                {"id": 3, "image_id": 2, "category_id": 3, "bbox": [30, 1, 15, 25],
                 "area": 375, "iscrowd": 0}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}


def _write(tmp_path, data) -> tuple:
    """The annotation file ``ann.json`` and an ``img`` folder with every image it lists."""
    image_dir = tmp_path / "img"
    image_dir.mkdir(exist_ok=True)
    images = data.get("images") if isinstance(data, dict) else None
    for img in images or []:
        if isinstance(img, dict) and isinstance(img.get("file_name"), str):
            pixels = np.full((H, W, 3), 90, np.uint8)
            Image.fromarray(pixels).save(image_dir / img["file_name"])
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return image_dir, path


def _open(tmp_path, data) -> CocoDetection:
    return CocoDetection(*_write(tmp_path, data))


def _refused(tmp_path, data, message: str) -> str:
    """The reader's error for ``data``: a CocoFormatError matching ``message`` naming the file."""
    with pytest.raises(CocoFormatError, match=message) as err:
        _open(tmp_path, data)
    assert "ann.json" in str(err.value)
    return str(err.value)


def _ground_truth_back(ds: CocoDetection) -> list[dict]:
    """Every ground-truth box of ``ds`` as a detection with score 1, in COCO results format."""
    dets, ids = [], []
    for i in range(len(ds)):
        t = ds.target(i)
        dets.append({"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])),
                     "labels": t["labels"]})
        ids.append(int(t["image_id"]))
    return to_coco_results(dets, ids, ds.category_ids)


@pytest.fixture(scope="module")
def tiny_model():
    """A small D0 for two classes; each test sets ``num_classes`` through a fresh one if needed."""
    return create_model("tf_efficientdet_d0", num_classes=2, fpn_channels=16, fpn_repeats=1,
                        head_repeats=1).eval()


# --------------------------------------------------------------- 1. silently wrong COCO AP
def test_ground_truth_fed_back_scores_ap_one(tmp_path):
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, _valid())
    assert coco_evaluate(ds.annotation_file, _ground_truth_back(ds))["AP"] == pytest.approx(1.0)


def test_duplicate_annotation_ids_are_refused(tmp_path):
    """COCOeval keeps one annotation per id: duplicates scored ground truth as AP 0.022."""
    data = _valid()
    data["annotations"][2]["id"] = 2
    message = _refused(tmp_path, data, r"annotation id\(s\) \[2\] appear more than once")
    assert "AP would be wrong" in message


def test_duplicate_image_ids_are_refused(tmp_path):
    data = _valid()
    data["images"][1]["id"] = 1
    _refused(tmp_path, data, r"image id\(s\) \[1\] appear more than once")


def test_duplicate_category_ids_are_refused(tmp_path):
    """A repeated category id would count as two classes (num_classes 5 for 4 categories)."""
    data = _valid()
    data["categories"].append({"id": 7, "name": "dog again"})
    _refused(tmp_path, data, r"category id\(s\) \[7\] appear more than once")


def test_annotation_ids_from_zero_still_score_ap_one(tmp_path):
    """Judgement call: ids from 0 are legal COCO (several exporters write them), but COCOeval
    reads id 0 as "no match" (AP 0.25 for a perfect answer); evaluation renumbers them."""
    pytest.importorskip("pycocotools")
    data = _valid()
    for k, ann in enumerate(data["annotations"]):
        ann["id"] = k
    ds = _open(tmp_path, data)
    assert coco_evaluate(ds.annotation_file, _ground_truth_back(ds))["AP"] == pytest.approx(1.0)


# --------------------------------------------------------------- 2. silent garbage in
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_bbox_is_refused_naming_the_annotation(tmp_path, bad):
    data = _valid()
    data["annotations"][1]["bbox"][2] = bad
    _refused(tmp_path, data, "annotation 2 has bbox .* NaN or infinite")


def _png16(path, pixels: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (PIL cannot write 16-bit RGB): gray (H, W) or RGB (H, W, 3)."""
    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels.reshape(h, -1))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", w, h, 16, 0 if pixels.ndim == 2 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_gray_png_is_scaled_not_clipped_to_white(tmp_path):
    """PIL's convert("RGB") clips 16-bit pixels: every one became 255 in training and eval."""
    ramp = (np.arange(H * W).reshape(H, W) * 40).astype(np.uint16)
    image_dir, ann = _write(tmp_path, _valid())
    Image.fromarray(ramp).save(image_dir / "a.png")
    image = CocoDetection(image_dir, ann).read_image(0)
    expected = torch.from_numpy(np.round(ramp / 257.0).astype(np.uint8))
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert torch.equal(image[0], expected) and torch.equal(image[2], expected)


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 32896, 0
    _png16(tmp_path / "rgb16.png", pixels)
    assert read_rgb_image(tmp_path / "rgb16.png")[0, 0].tolist() == [255, 128, 0]
    _png16(tmp_path / "gray16.png", np.full((8, 8), 32896, np.uint16))
    assert read_rgb_image(tmp_path / "gray16.png")[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "I;16"])
def test_every_pixel_format_becomes_rgb_uint8(tmp_path, mode):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 40, 10)
    rgb[:, 8:] = (255, 255, 255)
    source = Image.fromarray(rgb)
    if mode == "I;16":  # a 16-bit image: white is 65535
        image = Image.fromarray(np.asarray(source.convert("L")).astype(np.uint16) * 257)
    else:
        image = source.convert(mode)
    image.save(tmp_path / "x.png")
    out = read_rgb_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert out[0, 15].tolist() == [255, 255, 255]  # white stays white
    assert out[0, 0].tolist() != [255, 255, 255]  # and the dark half is not clipped to white


def test_float_pixel_files_are_refused_with_advice(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageFileError, match=r"f\.tif.*32-bit float"):
        read_rgb_image(tmp_path / "f.tif")


def test_missing_and_undecodable_image_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_rgb_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageFileError, match="bad.png"):
        read_rgb_image(tmp_path / "bad.png")


@pytest.mark.parametrize("array,dtype", [
    (np.zeros((8, 8, 3), np.uint16), "uint16"),
    (np.zeros((8, 8, 3), np.int32), "int32"),
    (np.zeros((8, 8, 3), np.int64), "int64"),
    (np.zeros((8, 8, 3), bool), "bool"),
    (torch.zeros(3, 8, 8, dtype=torch.int16), "int16"),
])
def test_images_of_other_dtypes_are_refused_naming_the_dtype(array, dtype):
    with pytest.raises(ValueError, match=f"got dtype {dtype}: .*(astype|convert)"):
        as_chw_tensor(array)


def test_uint8_and_float_images_are_accepted_as_float32():
    pixels = np.arange(8 * 8 * 3).reshape(8, 8, 3) % 256
    for image in (pixels.astype(np.uint8), pixels.astype(np.float64),
                  torch.from_numpy(pixels).float().permute(2, 0, 1), pixels.astype(np.float16)):
        out = as_chw_tensor(image)
        assert out.dtype == torch.float32 and out.shape == (3, 8, 8)
        assert torch.equal(out, torch.from_numpy(pixels).permute(2, 0, 1).float())


def test_gray_images_are_repeated_in_three_channels():
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    for image in (gray, gray[None], gray[..., None]):
        out = as_chw_tensor(image)
        assert out.shape == (3, 4, 5) and torch.equal(out[1], torch.from_numpy(gray).float())


@pytest.mark.parametrize("image,message", [
    (np.zeros((0, 0, 3), np.uint8), "at least one pixel"),
    (torch.zeros(3, 0, 5), "at least one pixel"),
    (np.full((4, 4, 3), np.nan), "NaN or infinite"),
    (np.full((4, 4, 3), -2.1), "values from -2.1"),  # a normalised image
    (np.zeros((4, 4, 4), np.uint8), "alpha"),
    ("photo.jpg", "read_rgb_image"),
])
def test_unusable_images_are_refused(image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        as_chw_tensor(image)


def test_predict_refuses_a_uint16_array_instead_of_detecting_garbage(tiny_model):
    with pytest.raises(ValueError, match="image 1: .*uint16"):
        predict(tiny_model, [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint16)])


def test_predict_on_no_images_returns_no_detections(tiny_model):
    """Judgement call: an empty list gives an empty list, as a loop over no images would."""
    assert predict(tiny_model, []) == []


@pytest.mark.slow
def test_predict_takes_one_gray_image(tiny_model):
    (det,) = predict(tiny_model, np.zeros((20, 30), np.uint8), image_size=128)
    assert det["boxes"].shape[1] == 4 and (det["boxes"][:, 2] <= 30).all()


# --------------------------------------------------------------- 3. crashes found late
def test_missing_area_and_iscrowd_are_filled_from_the_box(tmp_path):
    """Judgement call: COCO requires both and COCOeval reads both, but box-only files often
    leave them out: area defaults to the box's width * height, iscrowd to 0."""
    data = _valid()
    for ann in data["annotations"]:
        del ann["area"], ann["iscrowd"]
    _, path = _write(tmp_path, data)
    filled = read_coco_annotations(path)["annotations"]
    assert [(a["area"], a["iscrowd"]) for a in filled] == [(120, 0), (320, 0), (375, 0)]


def test_evaluation_works_on_a_file_without_area_and_iscrowd(tmp_path):
    """This crashed pycocotools (KeyError 'iscrowd') after the first training epoch."""
    pytest.importorskip("pycocotools")
    data = _valid()
    for ann in data["annotations"]:
        del ann["area"], ann["iscrowd"]
    ds = _open(tmp_path, data)
    assert coco_evaluate(ds.annotation_file, _ground_truth_back(ds))["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("key,value", [("area", -5), ("area", "big"), ("area", float("nan")),
                                       ("iscrowd", 2), ("iscrowd", "no")])
def test_invalid_area_or_iscrowd_is_refused(tmp_path, key, value):
    data = _valid()
    data["annotations"][0][key] = value
    _refused(tmp_path, data, f"annotation 1 has {key}")


def test_missing_image_files_are_found_when_the_dataset_is_opened(tmp_path):
    image_dir, ann = _write(tmp_path, _valid())
    (image_dir / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 images .*ann\.json.*\['b\.png'\]"):
        CocoDetection(image_dir, ann)


# --------------------------------------------------------------- 4. messages, not tracebacks
@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_a_section_that_is_null_is_named(tmp_path, key):
    data = _valid()
    data[key] = None
    _refused(tmp_path, data, f"'{key}' must be a list of objects, got null")


def test_a_file_that_is_not_an_object_is_named(tmp_path):
    _refused(tmp_path, [1, 2], "a COCO file is a JSON object")


def test_a_string_annotation_is_named(tmp_path):
    data = _valid()
    data["annotations"].insert(1, "person at 3,4")
    _refused(tmp_path, data, r"annotations\[1\] is 'person at 3,4', not a JSON object")


@pytest.mark.parametrize("section,key,where", [
    ("annotations", "id", r"annotations\[0\] has id '7'"),
    ("annotations", "image_id", "annotation 1 has image_id '7'"),
    ("annotations", "category_id", "annotation 1 has category_id '7'"),
    ("images", "id", r"images\[0\] has id '7'"),
    ("categories", "id", r"categories\[0\] has id '7'"),
])
def test_string_ids_are_named_with_the_fix(tmp_path, section, key, where):
    data = _valid()
    data[section][0][key] = "7"
    _refused(tmp_path, data, where + ", not an integer \\(write 7 without quotes\\)")


@pytest.mark.parametrize("key,value", [("width", 0), ("height", -3), ("width", 4.5),
                                       ("file_name", None)])
def test_bad_image_entries_are_named(tmp_path, key, value):
    data = _valid()
    data["images"][1][key] = value
    _refused(tmp_path, data, f"image 2 has {key}")


def test_an_empty_split_is_refused_when_opened(tmp_path):
    """Evaluating it exited 0 with AP 0.0; training on it has nothing to learn."""
    data = {**_valid(), "images": [], "annotations": []}
    _refused(tmp_path, data, "'images' is empty")


def test_no_categories_is_refused(tmp_path):
    data = {**_valid(), "annotations": [], "categories": []}
    _refused(tmp_path, data, "'categories' is empty")


def test_evaluating_no_images_is_refused(tmp_path, tiny_model):
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, _valid())
    ds.images = []  # a dataset filtered down to nothing
    with pytest.raises(ValueError, match="no images to evaluate on"):
        evaluate_model(tiny_model, ds, 128)


def test_evaluating_against_no_annotations_is_refused(tmp_path, tiny_model):
    """COCOeval reports -1 for every AP when there is no ground truth: refuse instead (before
    predicting anything, and in coco_evaluate too)."""
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, {**_valid(), "annotations": []})
    assert ds.num_annotations == 0 and len(ds) == 2  # images without objects: fine to train on
    with pytest.raises(ValueError, match="no annotations to evaluate against"):
        evaluate_model(tiny_model, ds, 128)
    results = [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}]
    with pytest.raises(ValueError, match="no annotations to evaluate against"):
        coco_evaluate(ds.annotation_file, results)


def test_check_evaluation_refuses_a_split_with_other_category_ids(tmp_path, tiny_model):
    """A validation split whose category ids differ from the training set's would score label k
    as another category: found before training by check_evaluation(category_ids=...)."""
    ds = _open(tmp_path, _valid())
    check_evaluation(tiny_model, ds, 128, category_ids=[3, 7])
    with pytest.raises(ValueError, match=r"category ids \[1, 2\] but .*ann\.json has \[3, 7\]"):
        check_evaluation(tiny_model, ds, 128, category_ids=[1, 2])


def test_results_for_unknown_images_are_named(tmp_path):
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, _valid())
    results = [{"image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}]
    with pytest.raises(ValueError, match=r"image id\(s\) \[99\]"):
        coco_evaluate(ds.annotation_file, results)


@pytest.mark.parametrize("batch_size", [-1, 0, 2.5])
def test_a_batch_size_below_one_is_refused(tmp_path, tiny_model, batch_size):
    """A batch size of -1 predicted nothing and reported AP 0.0."""
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, _valid())
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate_model(tiny_model, ds, 128, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        predict_dataset(tiny_model, ds, 128, batch_size=batch_size)


def test_a_model_with_fewer_classes_than_the_dataset_is_refused(tmp_path):
    pytest.importorskip("pycocotools")
    data = _valid()
    data["categories"].append({"id": 9, "name": "bird"})
    ds = _open(tmp_path, data)
    model = create_model("tf_efficientdet_d0", num_classes=2, fpn_channels=16, fpn_repeats=1,
                         head_repeats=1)
    with pytest.raises(ValueError, match="predicts 2 classes but .*ann.json has 3 categories"):
        evaluate_model(model, ds, 128)


def test_labels_beyond_the_datasets_categories_are_left_out():
    det = [{"boxes": torch.tensor([[1.0, 2, 5, 6], [2.0, 2, 6, 6]]),
            "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([4, 1])}]
    assert [r["category_id"] for r in to_coco_results(det, [1], [3, 7])] == [7]


@pytest.mark.slow
def test_a_model_with_more_classes_is_scored_on_the_datasets_categories(tmp_path):
    """Judgement call: allowed (label k is scored as the dataset's k-th category), with a warning;
    detections of the labels the dataset lacks are left out instead of crashing (IndexError)."""
    pytest.importorskip("pycocotools")
    ds = _open(tmp_path, _valid())
    model = create_model("tf_efficientdet_d0", num_classes=5, fpn_channels=16, fpn_repeats=1,
                         head_repeats=1)
    with pytest.warns(UserWarning, match="predicts 5 classes .* 2 categories"):
        stats = evaluate_model(model, ds, 128, results_file=tmp_path / "res.json")
    results = json.loads((tmp_path / "res.json").read_text())
    assert results and {r["category_id"] for r in results} <= {3, 7}
    assert 0.0 <= stats["AP"] <= 1.0
