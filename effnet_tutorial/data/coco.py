"""Reading any COCO-format detection dataset: an image folder and an ``instances_*.json``.

COCO stores boxes as ``[x, y, width, height]`` in pixels and gives categories arbitrary ids (1..90
with gaps in COCO itself). The reader returns what the rest of the package uses: **xyxy** boxes
and 0-based contiguous labels, with ``CocoDetection.category_ids`` to map labels back for
evaluation. It checks the file as it reads it and says which file and which entry is wrong.
Boxes outside the image are clipped; boxes with no area after clipping are dropped with one
warning that counts them; crowd annotations are skipped for training (as in the reference);
images without objects are kept: they are valid training data (all anchors negative).

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

Target = dict[str, torch.Tensor]
#: One object as the reader keeps it: an **xyxy** box in pixels and its 0-based label.
LabelledBox = tuple[list[float], int]


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
    """Parse ``path`` and check it has COCO's three lists: images, annotations, categories."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CocoFormatError(f"{path}: not valid JSON ({err})") from err
    _require(data, ("images", "annotations", "categories"), "the file", path)
    return data


def _index_categories(categories: list[dict], path: Path) -> tuple[list[int], list[str]]:
    """The category ids, sorted, and their names in that order.

    Label ``k`` of the model is the ``k``-th id of this list, which makes labels 0-based and
    contiguous even when COCO's ids have gaps.
    """
    for c in categories:
        _require(c, ("id", "name"), f"category {c}", path)
    ids = sorted(c["id"] for c in categories)
    names = {c["id"]: c["name"] for c in categories}
    return ids, [names[i] for i in ids]


def _index_images(images: list[dict], path: Path) -> list[dict]:
    """The image entries in file order, each checked for the keys the reader uses."""
    checked = []
    for img in images:
        _require(img, ("id", "file_name", "height", "width"), f"image entry {img}", path)
        checked.append(img)
    return checked


def _check_annotation(ann: dict, images_by_id: dict[int, dict], label_of: dict[int, int],
                      category_ids: list[int], path: Path) -> None:
    """Check an annotation's keys, and that the image and category it names exist."""
    _require(ann, ("id", "image_id", "category_id", "bbox"), f"annotation {ann.get('id')}", path)
    if ann["image_id"] not in images_by_id:
        raise CocoFormatError(
            f"{path}: annotation {ann['id']} refers to unknown image id {ann['image_id']}")
    if ann["category_id"] not in label_of:
        raise CocoFormatError(
            f"{path}: annotation {ann['id']} has unknown category id {ann['category_id']} "
            f"(categories: {category_ids})")


def _is_number(value: object) -> bool:
    """True for an int or a float; False for a bool, which Python counts as an int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _xywh(ann: dict, path: Path) -> tuple[float, float, float, float]:
    """The annotation's COCO box ``[x, y, width, height]`` as floats, once checked to be that."""
    bbox = ann["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise CocoFormatError(f"{path}: annotation {ann['id']} has bbox {bbox!r}; "
                              "COCO boxes are four numbers [x, y, width, height] in pixels")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, w, h


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
                       skip_crowd: bool, path: Path) -> tuple[dict[int, list[LabelledBox]], int]:
    """The objects of each image id, and how many boxes were dropped for having no area.

    Every annotation is checked, crowd ones included, before crowd ones are skipped (when
    ``skip_crowd``); the others become an **xyxy** box clipped to their image and a 0-based label.
    """
    images_by_id = {img["id"]: img for img in images}
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    per_image: dict[int, list[LabelledBox]] = defaultdict(list)
    dropped = 0
    for ann in annotations:
        _check_annotation(ann, images_by_id, label_of, category_ids, path)
        if skip_crowd and ann.get("iscrowd", 0):
            continue
        img = images_by_id[ann["image_id"]]
        box = _clip_to_image(_xywh(ann, path), img["width"], img["height"])
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
        data = _read_annotation_file(path)
        self.category_ids, self.class_names = _index_categories(data["categories"], path)
        self.images: list[dict] = _index_images(data["images"], path)
        self._objects, dropped = _index_annotations(data["annotations"], self.images,
                                                    self.category_ids, skip_crowd, path)
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
        """The image of entry ``index`` as uint8 ``(3, H, W)``; clear error if unreadable."""
        from PIL import Image, UnidentifiedImageError

        info = self.images[index]
        file = self.image_dir / info["file_name"]
        try:
            with Image.open(file) as im:
                array = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise CocoFormatError(
                f"cannot read image {file} (image id {info['id']}): {err}") from err
        if array.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(
                f"{file}: the image is {array.shape[1]}x{array.shape[0]} but "
                f"{self.annotation_file} says {info['width']}x{info['height']}")
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

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
