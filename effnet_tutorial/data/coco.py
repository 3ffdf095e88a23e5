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
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch

Target = dict[str, torch.Tensor]


class CocoFormatError(ValueError):
    """A COCO annotation file that cannot be used as it is (the message names the file)."""


def _require(obj: dict, keys: tuple[str, ...], where: str, path: Path) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CocoFormatError(f"{path}: {where} is missing key(s) {missing}")


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format dataset: ``dataset[i]`` is ``(image, target)``.

    ``image`` is a uint8 ``(3, H, W)`` tensor; ``target`` holds ``boxes`` (``(N, 4)`` float
    **xyxy** pixels), ``labels`` (``(N,)`` int64, 0-based), ``image_id`` and ``orig_size``
    (``(H, W)``). ``transform(image, target)`` runs on both, if given.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]] | None = None,
                 skip_crowd: bool = True) -> None:
        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.transform = transform
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.annotation_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        try:
            data = json.loads(self.annotation_file.read_text())
        except json.JSONDecodeError as err:
            raise CocoFormatError(f"{self.annotation_file}: not valid JSON ({err})") from err
        path = self.annotation_file
        _require(data, ("images", "annotations", "categories"), "the file", path)
        for c in data["categories"]:
            _require(c, ("id", "name"), f"category {c}", path)
        self.category_ids: list[int] = sorted(c["id"] for c in data["categories"])
        names = {c["id"]: c["name"] for c in data["categories"]}
        self.class_names: list[str] = [names[i] for i in self.category_ids]
        label_of = {cid: k for k, cid in enumerate(self.category_ids)}
        self.images: list[dict] = []
        for img in data["images"]:
            _require(img, ("id", "file_name", "height", "width"), f"image entry {img}", path)
            self.images.append(img)
        known = {img["id"]: img for img in self.images}
        per_image: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
        dropped = 0
        for ann in data["annotations"]:
            _require(ann, ("id", "image_id", "category_id", "bbox"), f"annotation {ann.get('id')}", path)
            if ann["image_id"] not in known:
                raise CocoFormatError(f"{path}: annotation {ann['id']} refers to unknown image id {ann['image_id']}")
            if ann["category_id"] not in label_of:
                raise CocoFormatError(
                    f"{path}: annotation {ann['id']} has unknown category id {ann['category_id']} "
                    f"(categories: {self.category_ids})")
            if skip_crowd and ann.get("iscrowd", 0):
                continue
            img = known[ann["image_id"]]
            bbox = ann["bbox"]
            if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                raise CocoFormatError(f"{path}: annotation {ann['id']} has bbox {bbox!r}; "
                                      "COCO boxes are four numbers [x, y, width, height] in pixels")
            x, y, w, h = (float(v) for v in bbox)
            x1, y1 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
            x2, y2 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                dropped += 1
                continue
            per_image[img["id"]].append(([x1, y1, x2, y2], label_of[ann["category_id"]]))
        if dropped:
            warnings.warn(f"{path}: dropped {dropped} box(es) with no area inside their image",
                          stacklevel=2)
        self._objects = per_image

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
            raise CocoFormatError(f"cannot read image {file} (image id {info['id']}): {err}") from err
        if array.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(
                f"{file}: the image is {array.shape[1]}x{array.shape[0]} but {self.annotation_file} "
                f"says {info['width']}x{info['height']}")
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
