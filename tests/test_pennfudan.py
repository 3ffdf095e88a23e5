"""Penn-Fudan download, verification, extraction and COCO conversion, on a small archive built
here with the real layout (never the network)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet_tutorial.cli import dataset_paths
from effnet_tutorial.data.coco import CocoDetection
from effnet_tutorial.data.pennfudan import (
    ChecksumError,
    _boxes_from_mask,
    download_pennfudan,
    extract_pennfudan,
    pennfudan_to_coco,
    prepare_pennfudan,
)

# name: (width, height, {instance id: [inclusive rectangles (x0, y0, x1, y1)]})
SCENES = {
    "FudanPed00001": (40, 30, {1: [(3, 2, 7, 9)],
                               2: [(20, 10, 29, 12), (20, 13, 22, 25)]}),  # an L shape
    "FudanPed00002": (32, 48, {}),  # nobody in the picture
    "FudanPed00003": (50, 20, {1: [(0, 0, 0, 0)],  # one pixel in the corner
                               2: [(10, 5, 19, 19)],  # touches the bottom edge
                               3: [(49, 0, 49, 19)]}),  # the last column
    "PennPed00001": (24, 36, {1: [(2, 4, 21, 33)]}),
    "PennPed00002": (36, 24, {1: [(0, 0, 5, 5)],
                              3: [(10, 2, 11, 3), (30, 20, 31, 21)]}),  # id gap, two blobs
    "PennPed00003": (28, 28, {1: [(5, 5, 9, 9)]}),  # saved as a palette image, like the real ones
}
# COCO [x, y, w, h] and pixel count, worked out by hand from SCENES.
EXPECTED = {
    "FudanPed00001.png": [([3, 2, 5, 8], 40), ([20, 10, 10, 16], 69)],
    "FudanPed00002.png": [],
    "FudanPed00003.png": [([0, 0, 1, 1], 1), ([10, 5, 10, 15], 150), ([49, 0, 1, 20], 20)],
    "PennPed00001.png": [([2, 4, 20, 30], 600)],
    "PennPed00002.png": [([0, 0, 6, 6], 36), ([10, 2, 22, 20], 8)],
    "PennPed00003.png": [([5, 5, 5, 5], 25)],
}


def image_array(name: str) -> np.ndarray:
    width, height, _ = SCENES[name]
    seed = sorted(SCENES).index(name)
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_image(name: str, size=None) -> Image.Image:
    width, height, instances = SCENES[name]
    width, height = size or (width, height)
    mask = np.zeros((height, width), np.uint8)
    for instance, rects in instances.items():
        for x0, y0, x1, y1 in rects:
            mask[y0:y1 + 1, x0:x1 + 1] = instance
    if name == "PennPed00003":
        image = Image.frombytes("P", (width, height), mask.tobytes())
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
        return image
    return Image.fromarray(mask)


def make_archive(path: Path, skip_mask: str = "", wrong_size: str = "",
                 extra: dict[str, bytes] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for folder in ("", "PNGImages/", "PedMasks/", "Annotation/"):
            zf.writestr(f"PennFudanPed/{folder}", b"")
        for name in SCENES:
            zf.writestr(f"PennFudanPed/PNGImages/{name}.png",
                        png_bytes(Image.fromarray(image_array(name))))
            if name != skip_mask:
                size = (7, 7) if name == wrong_size else None
                zf.writestr(f"PennFudanPed/PedMasks/{name}_mask.png",
                            png_bytes(mask_image(name, size)))
            zf.writestr(f"PennFudanPed/Annotation/{name}.txt", b"# not used\n")
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "server" / "PennFudanPed.zip")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- download and checksums -------------------------------------------------------------------

def test_download_records_hash_then_verifies_without_downloading(tmp_path, source, capsys):
    root = tmp_path / "data"
    archive = download_pennfudan(root, url=source.as_uri())
    assert archive == root / "PennFudanPed.zip"
    assert archive.read_bytes() == source.read_bytes()
    digest = sha(source)
    record = root / "PennFudanPed.zip.sha256"
    assert record.read_text().split()[0] == digest
    out = capsys.readouterr().out
    assert digest in out and "downloading" in out  # printed so the reader can pin it
    assert leftovers(root) == ["PennFudanPed.zip", "PennFudanPed.zip.sha256"]  # no temp file
    source.unlink()  # a second call must not need the source
    assert download_pennfudan(root, url=source.as_uri()) == archive
    assert "downloading" not in capsys.readouterr().out


def test_pinned_hash_accepts_matching_download(tmp_path, source):
    root = tmp_path / "data"
    archive = download_pennfudan(root, url=source.as_uri(), sha256=sha(source).upper(),
                                 progress=False)
    assert archive.read_bytes() == source.read_bytes()
    assert (root / "PennFudanPed.zip.sha256").read_text().split()[0] == sha(source)


def test_wrong_pinned_hash_raises_and_leaves_no_file(tmp_path, source):
    root = tmp_path / "data"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download_pennfudan(root, url=source.as_uri(), sha256=wrong, progress=False)
    assert wrong in str(err.value) and sha(source) in str(err.value)
    assert leftovers(root) == []


def test_tampered_archive_is_detected_on_the_next_call(tmp_path, source):
    root = tmp_path / "data"
    archive = download_pennfudan(root, url=source.as_uri(), progress=False)
    original = sha(archive)
    with open(archive, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ChecksumError) as err:
        download_pennfudan(root, url=source.as_uri(), progress=False)
    assert original in str(err.value) and sha(archive) in str(err.value)


def test_changed_upstream_file_is_rejected_against_the_record(tmp_path, source):
    root = tmp_path / "data"
    download_pennfudan(root, url=source.as_uri(), progress=False)
    (root / "PennFudanPed.zip").unlink()  # the record stays
    make_archive(source, extra={"PennFudanPed/readme.txt": b"new release"})
    with pytest.raises(ChecksumError, match="delete"):
        download_pennfudan(root, url=source.as_uri(), progress=False)
    assert leftovers(root) == ["PennFudanPed.zip.sha256"]


def test_failed_download_names_the_url_and_leaves_nothing(tmp_path):
    url = (tmp_path / "missing.zip").as_uri()
    with pytest.raises(OSError, match="missing.zip"):
        download_pennfudan(tmp_path / "data", url=url, progress=False)
    assert leftovers(tmp_path / "data") == []


def test_malformed_hash_is_rejected(tmp_path, source):
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download_pennfudan(tmp_path / "data", url=source.as_uri(), sha256="abc")


# --- extraction -------------------------------------------------------------------------------

def test_extract(tmp_path, source):
    folder = extract_pennfudan(source, tmp_path / "data")
    assert folder == tmp_path / "data" / "PennFudanPed"
    assert len(list((folder / "PNGImages").glob("*.png"))) == len(SCENES)
    assert leftovers(tmp_path / "data") == ["PennFudanPed"]  # no temporary folder left


def test_extract_rejects_zip_slip(tmp_path):
    evil = make_archive(tmp_path / "evil.zip", extra={"../escaped.txt": b"owned"})
    with pytest.raises(ValueError, match="outside"):
        extract_pennfudan(evil, tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists()
    assert leftovers(tmp_path / "data") == []


def test_extract_rejects_another_layout(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("images/a.png", b"")
    with pytest.raises(FileNotFoundError, match="PedMasks"):
        extract_pennfudan(other, tmp_path / "data")


# --- conversion -------------------------------------------------------------------------------

def test_boxes_from_mask_span_first_to_last_pixel_per_instance():
    mask = np.zeros((5, 7), np.uint8)
    mask[1:3, 0:2] = 1  # instance 1 in two blobs: a 2x2 square on the left edge...
    mask[0, 4] = 1      # ...and one pixel in the top row
    mask[4, 6] = 3      # instance 3 (no 2): one pixel in the bottom-right corner
    mask[2, 5] = 4      # instance 4 listed after 3 although it comes first in reading order
    boxes = _boxes_from_mask(mask)
    assert boxes == [([0, 0, 5, 3], 5), ([6, 4, 1, 1], 1), ([5, 2, 1, 1], 1)]
    json.dumps(boxes)  # plain Python ints, ready for the annotation file
    assert _boxes_from_mask(np.zeros((3, 3), np.uint8)) == []  # background only: no boxes


@pytest.fixture
def extracted(tmp_path, source) -> Path:
    return extract_pennfudan(source, tmp_path / "extracted")


def read_split(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_conversion_gives_the_boxes_of_the_masks(tmp_path, extracted):
    out = tmp_path / "coco"
    summary = pennfudan_to_coco(extracted, out, val_images=2, seed=0)
    assert summary["train"]["images"] == 4 and summary["val"]["images"] == 2
    assert summary["train"]["boxes"] + summary["val"]["boxes"] == 9
    found, ann_ids = {}, []
    for split in ("train", "val"):
        data = read_split(out, split)
        assert data["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
        assert summary[split]["boxes"] == len(data["annotations"])
        names = {img["id"]: img["file_name"] for img in data["images"]}
        for img in data["images"]:
            width, height, _ = SCENES[Path(img["file_name"]).stem]
            assert (img["width"], img["height"]) == (width, height)
            assert img["id"] == sorted(EXPECTED).index(img["file_name"]) + 1
            assert (out / "images" / split / img["file_name"]).is_file()
            found[img["file_name"]] = []
        for ann in data["annotations"]:
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            found[names[ann["image_id"]]].append((ann["bbox"], ann["area"]))
            ann_ids.append(ann["id"])
    assert found == EXPECTED
    assert sorted(ann_ids) == list(range(1, 10))


def test_split_is_deterministic_for_a_seed(tmp_path, extracted):
    def split_of(seed: int, out: Path) -> tuple[list[str], list[str]]:
        pennfudan_to_coco(extracted, out, val_images=2, seed=seed)
        return tuple(sorted(img["file_name"] for img in read_split(out, s)["images"])
                     for s in ("train", "val"))

    train, val = split_of(0, tmp_path / "a")
    assert len(val) == 2 and sorted(train + val) == sorted(EXPECTED)
    assert split_of(0, tmp_path / "b") == (train, val)
    assert any(split_of(seed, tmp_path / "c")[1] != val for seed in range(1, 6))
    split_of(0, tmp_path / "c")  # converting again into the same folder leaves no stale image
    assert sorted(p.name for p in (tmp_path / "c" / "images" / "val").iterdir()) == val


def test_result_loads_through_coco_detection(tmp_path, extracted):
    out = tmp_path / "coco"
    pennfudan_to_coco(extracted, out, val_images=2)
    seen = 0
    for split in ("train", "val"):
        dataset = CocoDetection(*dataset_paths(out, split))  # the paths `train --data` uses
        assert dataset.class_names == ["person"]
        for i in range(len(dataset)):
            image, target = dataset[i]
            name = dataset.images[i]["file_name"]
            assert torch.equal(image, torch.from_numpy(image_array(Path(name).stem)).permute(2, 0, 1))
            xyxy = [[x, y, x + w, y + h] for (x, y, w, h), _ in EXPECTED[name]]
            assert target["boxes"].tolist() == xyxy
            assert target["labels"].tolist() == [0] * len(xyxy)
            seen += 1
    assert seen == len(SCENES)


def test_missing_mask_is_named(tmp_path):
    folder = extract_pennfudan(make_archive(tmp_path / "a.zip", skip_mask="PennPed00002"),
                               tmp_path / "extracted")
    with pytest.raises(FileNotFoundError, match="PennPed00002_mask.png"):
        pennfudan_to_coco(folder, tmp_path / "coco", val_images=1)


def test_mask_of_another_size_is_rejected(tmp_path):
    folder = extract_pennfudan(make_archive(tmp_path / "a.zip", wrong_size="FudanPed00003"),
                               tmp_path / "extracted")
    with pytest.raises(ValueError, match="FudanPed00003_mask.png is 7x7 .* is 50x20"):
        pennfudan_to_coco(folder, tmp_path / "coco", val_images=1)


def test_val_images_must_leave_training_data(tmp_path, extracted):
    with pytest.raises(ValueError, match="val_images"):
        pennfudan_to_coco(extracted, tmp_path / "coco", val_images=len(SCENES))


# --- everything -------------------------------------------------------------------------------

def test_prepare_is_idempotent(tmp_path, source, capsys):
    root = tmp_path / "data"
    coco = prepare_pennfudan(root, url=source.as_uri(), val_images=2)
    assert coco == root / "coco"
    assert dataset_paths(coco, "train")[0] == coco / "images" / "train"
    first = read_split(coco, "val")
    source.unlink()  # no second download: the source is gone
    capsys.readouterr()
    assert prepare_pennfudan(root, url=source.as_uri(), val_images=2) == coco
    assert "already prepared" in capsys.readouterr().out
    assert read_split(coco, "val") == first
    # Other split settings convert again from the extracted folder, still without the source.
    prepare_pennfudan(root, url=source.as_uri(), val_images=3, progress=False)
    assert len(read_split(coco, "val")["images"]) == 3
