"""Reading any COCO-format detection dataset: an image folder and an ``instances_*.json``.

COCO stores boxes as ``[x, y, width, height]`` in pixels and gives categories arbitrary ids (1..90
with gaps in COCO itself). The reader returns what the rest of the package uses: **xyxy** boxes
and 0-based contiguous labels, with ``CocoDetection.category_ids`` to map labels back for
evaluation. Opening a dataset checks the whole file (:func:`read_coco_annotations`) and that
every image file is there, so a broken dataset fails before any training, with a message naming
the file, the entry and what is wrong: ids must be integers and unique within their section (a
repeated annotation or image id makes COCO's evaluator score a wrong AP; a repeated category
would become two classes), boxes four finite numbers, and a split must have images and
categories. An
annotation without ``area`` gets its box's area and one without ``iscrowd`` gets 0 (the COCO
format requires both, the evaluator reads both, and hand-made files often leave them out).
Boxes outside the image are clipped; boxes with no area after clipping are dropped with one
warning that counts them; crowd annotations are skipped for training (as in the reference);
images without objects are kept: they are valid training data (all anchors negative).

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from .transforms import ImageFileError, read_rgb_image

Target = dict[str, torch.Tensor]
#: One object as the reader keeps it, an **xyxy** box in pixels and its 0-based label.
LabelledBox = tuple[list[float], int]
#: The three lists of a COCO annotation file, in the order they are checked.
SECTIONS = ("categories", "images", "annotations")
#: Why a repeated id is refused, per kind of entry.
_DUPLICATE_HARM = {
    "category": "each would become a class of its own",
    "image": "their annotations would be mixed up and scored twice",
    "annotation": "COCO's evaluator keeps one annotation per id, so AP would be wrong",
}


class CocoFormatError(ValueError):
    """A COCO annotation file that cannot be used as it is (the message names the file)."""


def _require(obj: dict, keys: tuple[str, ...], where: str, path: Path) -> None:
    """Raise :class:`CocoFormatError` naming ``where`` if ``obj`` lacks any of ``keys``."""
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CocoFormatError(f"{path}: {where} is missing key(s) {missing}")


def _check_paths(image_dir: Path, annotation_file: Path) -> None:
    """Fail early, naming the path, if the annotation file or the image folder is not there."""
    if not annotation_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotation_file}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")


def _read_annotation_file(path: Path) -> dict:
    """Parse ``path`` and check it is a JSON object with COCO's three lists."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise CocoFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: a COCO file is a JSON object with 'images', "
                              f"'annotations' and 'categories', not a {type(data).__name__}")
    _require(data, ("images", "annotations", "categories"), "the file", path)
    return data


def _check_sections(data: dict, path: Path) -> None:
    """Each section is a list of JSON objects; images and categories are not empty."""
    for key in SECTIONS:
        entries = data[key]
        if not isinstance(entries, list):
            raise CocoFormatError(f"{path}: '{key}' must be a list of objects, got "
                                  f"{json.dumps(entries)[:80]}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise CocoFormatError(f"{path}: {key}[{i}] is {entry!r}, not a JSON object "
                                      "({...}) as COCO entries are")
    if not data["images"]:
        raise CocoFormatError(f"{path}: 'images' is empty: this split has nothing to train or "
                              "evaluate on (is it the right file?)")
    if not data["categories"]:
        raise CocoFormatError(f"{path}: 'categories' is empty: a detector needs at least one")


def _is_int(value: object) -> bool:
    """True for an int; False for a bool, which Python counts as an int."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for an int or a float; False for a bool, which Python counts as an int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(entry: dict, key: str, where: str, path: Path) -> None:
    """``entry[key]`` is an integer (COCO ids and sizes are), else say so naming ``where``."""
    value = entry[key]
    if not _is_int(value):
        numeric = isinstance(value, str) and value.lstrip("-").isdigit()
        hint = f" (write {value} without quotes)" if numeric else ""
        raise CocoFormatError(f"{path}: {where} has {key} {value!r}, not an integer{hint}")


def _check_unique_ids(entries: list[dict], kind: str, path: Path) -> None:
    """Every ``id`` of a section once: name the repeated ones and what they would break."""
    repeated = sorted(i for i, n in Counter(e["id"] for e in entries).items() if n > 1)
    if repeated:
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise CocoFormatError(
            f"{path}: {kind} id(s) {repeated[:10]}{more} appear more than once "
            f"({_DUPLICATE_HARM[kind]}); give every {kind} its own id")


def _check_categories(categories: list[dict], path: Path) -> None:
    """Every category has an integer ``id`` of its own and a ``name``."""
    for i, c in enumerate(categories):
        _require(c, ("id", "name"), f"category {c}", path)
        _check_int(c, "id", f"categories[{i}]", path)
    _check_unique_ids(categories, "category", path)


def _check_image_entry(img: dict, i: int, path: Path) -> None:
    """An image entry has an integer id, a file name and a positive integer size."""
    _require(img, ("id", "file_name", "height", "width"), f"image entry {img}", path)
    _check_int(img, "id", f"images[{i}]", path)
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        raise CocoFormatError(f"{path}: image {img['id']} has file_name {img['file_name']!r}, "
                              "not a file name")
    for key in ("height", "width"):
        _check_int(img, key, f"image {img['id']}", path)
        if img[key] < 1:
            raise CocoFormatError(f"{path}: image {img['id']} has {key} {img[key]}; "
                                  "images are at least 1 pixel")


def _check_images(images: list[dict], path: Path) -> None:
    """Every image entry is well formed and has an id of its own."""
    for i, img in enumerate(images):
        _check_image_entry(img, i, path)
    _check_unique_ids(images, "image", path)


def _xywh(ann: dict, path: Path) -> tuple[float, float, float, float]:
    """The annotation's COCO box ``[x, y, width, height]`` as floats, once checked to be that."""
    bbox = ann["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise CocoFormatError(f"{path}: annotation {ann['id']} has bbox {bbox!r}; "
                              "COCO boxes are four numbers [x, y, width, height] in pixels")
    if not all(map(math.isfinite, bbox)):
        raise CocoFormatError(f"{path}: annotation {ann['id']} has bbox {bbox!r} with a NaN or "
                              "infinite value; fix the box or remove the annotation")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, w, h


def _fill_area_and_crowd(ann: dict, xywh: tuple[float, float, float, float],
                         path: Path) -> None:
    """Give ``ann`` the ``area`` (its box's) and ``iscrowd`` (0) it lacks; check them if given.

    The evaluator reads both of every annotation; leaving them out of a hand-made file is
    common, and the box area is what a box-only dataset can offer.
    """
    _, _, w, h = xywh
    ann.setdefault("area", max(w, 0.0) * max(h, 0.0))
    ann.setdefault("iscrowd", 0)
    area = ann["area"]
    if not _is_number(area) or not math.isfinite(area) or area < 0:
        raise CocoFormatError(f"{path}: annotation {ann['id']} has area {area!r}; an area is a "
                              "number >= 0 (or leave it out to use the box's)")
    if ann["iscrowd"] not in (0, 1):
        raise CocoFormatError(f"{path}: annotation {ann['id']} has iscrowd {ann['iscrowd']!r}; "
                              "it is 0 or 1")


def _check_annotation(ann: dict, i: int, image_ids: set[int], category_ids: set[int],
                      path: Path) -> None:
    """Check an annotation's keys, ids and box, that its image and category exist, and fill in
    the ``area`` and ``iscrowd`` it lacks."""
    _require(ann, ("id", "image_id", "category_id", "bbox"), f"annotation {ann.get('id')}", path)
    _check_int(ann, "id", f"annotations[{i}]", path)
    for key in ("image_id", "category_id"):
        _check_int(ann, key, f"annotation {ann['id']}", path)
    if ann["image_id"] not in image_ids:
        raise CocoFormatError(
            f"{path}: annotation {ann['id']} refers to unknown image id {ann['image_id']}")
    if ann["category_id"] not in category_ids:
        raise CocoFormatError(
            f"{path}: annotation {ann['id']} has unknown category id {ann['category_id']} "
            f"(categories: {sorted(category_ids)})")
    _fill_area_and_crowd(ann, _xywh(ann, path), path)


def _check_annotations(annotations: list[dict], images: list[dict], categories: list[dict],
                       path: Path) -> None:
    """Every annotation is well formed (crowd ones included) and has an id of its own."""
    image_ids = {img["id"] for img in images}
    category_ids = {c["id"] for c in categories}
    for i, ann in enumerate(annotations):
        _check_annotation(ann, i, image_ids, category_ids, path)
    _check_unique_ids(annotations, "annotation", path)


def read_coco_annotations(annotation_file: str | Path) -> dict:
    """The parsed COCO file, checked entry by entry, with ``area`` and ``iscrowd`` filled in.

    What :class:`CocoDetection` trains on and what :mod:`~effnet_tutorial.evaluate` scores
    against, so both see the same checked data. Raises :class:`CocoFormatError` naming the file,
    the entry and what to fix.
    """
    path = Path(annotation_file)
    data = _read_annotation_file(path)
    _check_sections(data, path)
    _check_categories(data["categories"], path)
    _check_images(data["images"], path)
    _check_annotations(data["annotations"], data["images"], data["categories"], path)
    return data


def _check_image_files(image_dir: Path, images: list[dict], path: Path) -> None:
    """Every image file the annotation file lists is in ``image_dir`` (found now, not mid-epoch)."""
    missing = [img["file_name"] for img in images if not (image_dir / img["file_name"]).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} of the {len(images)} images listed in {path} are not in "
            f"{image_dir}: {missing[:5]}{more}; is it the right image folder?")


def _index_categories(categories: list[dict]) -> tuple[list[int], list[str]]:
    """The category ids, sorted, and their names in that order.

    Label ``k`` of the model is the ``k``-th id of this list, which makes labels 0-based and
    contiguous even when COCO's ids have gaps.
    """
    ids = sorted(c["id"] for c in categories)
    names = {c["id"]: c["name"] for c in categories}
    return ids, [names[i] for i in ids]


def _clip_to_image(xywh: tuple[float, float, float, float], width: int,
                   height: int) -> list[float] | None:
    """The **xyxy** box of ``xywh`` clipped to a ``width`` x ``height`` image.

    ``None`` if nothing is left (the box lies outside the image, or has zero width or height):
    such a box cannot be matched to any anchor, so it is dropped rather than trained on.
    """
    x, y, w, h = xywh
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return [x1, y1, x2, y2]


def _index_annotations(annotations: list[dict], images: list[dict], category_ids: list[int],
                       skip_crowd: bool) -> tuple[dict[int, list[LabelledBox]], int]:
    """The objects of each image id, and how many boxes were dropped for having no area.

    The annotations are already checked; crowd ones are skipped when ``skip_crowd``, the others
    become an **xyxy** box clipped to their image and a 0-based label.
    """
    images_by_id = {img["id"]: img for img in images}
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    per_image: dict[int, list[LabelledBox]] = defaultdict(list)
    dropped = 0
    for ann in annotations:
        if skip_crowd and ann["iscrowd"]:
            continue
        img = images_by_id[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = _clip_to_image((x, y, w, h), img["width"], img["height"])
        if box is None:
            dropped += 1
            continue
        per_image[img["id"]].append((box, label_of[ann["category_id"]]))
    return per_image, dropped


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format dataset: ``dataset[i]`` is ``(image, target)``.

    ``image`` is a uint8 ``(3, H, W)`` tensor; ``target`` holds ``boxes`` (``(N, 4)`` float
    **xyxy** pixels), ``labels`` (``(N,)`` int64, 0-based), ``image_id`` and ``orig_size``
    (``(H, W)``). ``transform(image, target)`` runs on both, if given.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Callable[[torch.Tensor, Target],
                                     tuple[torch.Tensor, Target]] | None = None,
                 skip_crowd: bool = True) -> None:
        """Read and check ``annotation_file`` once; ``skip_crowd`` leaves crowd regions out."""
        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.transform = transform
        _check_paths(self.image_dir, self.annotation_file)
        path = self.annotation_file
        data = read_coco_annotations(path)
        self.category_ids, self.class_names = _index_categories(data["categories"])
        self.images: list[dict] = data["images"]
        #: Every annotation of the file, crowd ones and dropped boxes included (COCOeval's).
        self.num_annotations = len(data["annotations"])
        _check_image_files(self.image_dir, self.images, path)
        self._objects, dropped = _index_annotations(data["annotations"], self.images,
                                                    self.category_ids, skip_crowd)
        if dropped:
            warnings.warn(f"{path}: dropped {dropped} box(es) with no area inside their image",
                          stacklevel=2)

    @property
    def num_classes(self) -> int:
        """The number of categories."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, index: int) -> torch.Tensor:
        """The image of entry ``index`` as uint8 ``(3, H, W)`` RGB; clear error if unreadable.

        Decoded by :func:`~effnet_tutorial.data.transforms.read_rgb_image`: 16-bit images are
        scaled to 8 bits, grayscale, palette and RGBA images converted to RGB.
        """
        info = self.images[index]
        file = self.image_dir / info["file_name"]
        try:
            array = read_rgb_image(file)
        except ImageFileError as err:
            raise CocoFormatError(
                f"{err} (image id {info['id']} of {self.annotation_file})") from err
        if array.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(
                f"{file}: the image is {array.shape[1]}x{array.shape[0]} but "
                f"{self.annotation_file} says {info['width']}x{info['height']}")
        return torch.from_numpy(array).permute(2, 0, 1)

    def target(self, index: int) -> Target:
        """The annotations of entry ``index`` (boxes **xyxy**, labels 0-based)."""
        info = self.images[index]
        objects = self._objects.get(info["id"], [])
        boxes = torch.tensor([b for b, _ in objects], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([label for _, label in objects], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels, "image_id": torch.tensor(info["id"]),
                "orig_size": torch.tensor([info["height"], info["width"]])}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.read_image(index), self.target(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
