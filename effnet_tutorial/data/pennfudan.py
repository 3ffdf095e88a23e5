"""The Penn-Fudan pedestrian dataset, downloaded on demand and converted to COCO format.

Penn-Fudan (Wang, Shi, Song and Shen, 2007) holds 170 street photographs with 345 pedestrians,
one class ("person"), and an instance mask per image: pixel value 0 is background and 1..N mark
one pedestrian each. It is small enough to download in seconds and to fine-tune a pretrained
detector on a laptop, which is what Part IV uses it for.

The archive is fetched with ``urllib`` into a temporary file that is renamed into place only
once complete, so an interrupted download never leaves a half archive that later calls would
trust. Its SHA-256 is computed while it streams. We have not pinned the upstream hash in this
package (we could not verify it when writing it), so by default the check is *trust on first
use*: the first download records its hash next to the archive and every later call verifies the
archive against that record; pass ``sha256=`` (the printed hash, or one you trust) to pin it.

Boxes are derived from the masks, not from the text annotations of the archive, as the
torchvision detection tutorial does. The result is written in the folder layout the rest of the
package reads (:func:`effnet_tutorial.data.shapes.write_coco_dataset`,
:func:`effnet_tutorial.cli.dataset_paths`): ``images/<split>/*.png`` plus
``annotations/instances_<split>.json``, so ``python -m effnet_tutorial train --data <root>``
and :class:`effnet_tutorial.data.coco.CocoDetection` work on it unchanged.

In the book: Chapter 13, *Data for detection*.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

#: Where the archive is published by its authors.
PENNFUDAN_URL: str = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
#: The expected SHA-256 of the archive at :data:`PENNFUDAN_URL`, or ``None`` while it is not
#: pinned: then the first download records its hash and later calls check against the record.
PENNFUDAN_SHA256: str | None = None
#: The archive's file name under ``root``, whatever the URL it came from.
ARCHIVE_NAME: str = "PennFudanPed.zip"
#: The folder the archive unpacks to, holding ``PNGImages``, ``PedMasks`` and ``Annotation``.
FOLDER_NAME: str = "PennFudanPed"
#: The only COCO category of the converted dataset.
CATEGORIES: list[dict] = [{"id": 1, "name": "person", "supercategory": "person"}]
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """An archive whose SHA-256 is not the expected one (the message names both hashes)."""


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file as 64 lowercase hex digits, read in chunks (archives can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_hash(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _record_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _read_record(record: Path) -> str | None:
    if not record.is_file():
        return None
    text = record.read_text().split()
    try:
        return _normalise_hash(text[0] if text else "")
    except ValueError as err:
        raise ValueError(f"{record}: not a SHA-256 record ({err}); delete it to record the "
                         f"archive's hash again") from err


def _fetch(url: str, dest_dir: Path, progress: bool) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``dest_dir``; returns it and its SHA-256."""
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{ARCHIVE_NAME}.", suffix=".part")
    tmp = Path(name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            if progress:
                size = f" ({total / 1e6:.1f} MB)" if total else ""
                print(f"downloading {url}{size}", flush=True)
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and total and done / total >= next_report:
                    print(f"  {done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done // total}%)",
                          flush=True)
                    while next_report <= done / total:
                        next_report += 0.1
            if progress and not total:
                print(f"  {done / 1e6:.1f} MB", flush=True)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not download {url}: {err}. Check the address and your connection, "
                      f"or download the file by hand and save it as "
                      f"{dest_dir / ARCHIVE_NAME}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def download_pennfudan(root: str | Path, url: str = PENNFUDAN_URL,
                       sha256: str | None = PENNFUDAN_SHA256, progress: bool = True) -> Path:
    """Make sure ``root/PennFudanPed.zip`` exists and is the expected file; returns its path.

    The expected hash is ``sha256`` if given, else the one recorded in
    ``root/PennFudanPed.zip.sha256`` by an earlier call, else none (trust on first use: the
    archive's hash is then recorded and printed, so that you can pin it with ``sha256=``).

    * If the archive exists and matches (or nothing is expected yet), nothing is downloaded.
    * If it exists and does not match, :class:`ChecksumError` is raised and the file is left
      alone for you to inspect: it was changed or corrupted after it was verified.
    * Otherwise ``url`` (``https://``, or ``file://`` for a local copy) is streamed into a
      temporary file, hashed on the way, and renamed into place only if it matches, so no
      partial or unverified archive is ever left under the final name. A mismatch deletes the
      download and raises :class:`ChecksumError`.

    ``progress`` prints plain-text progress lines (no widgets, so it works in logs).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive, record = root / ARCHIVE_NAME, _record_path(root / ARCHIVE_NAME)
    pinned = _normalise_hash(sha256)
    expected = pinned or _read_record(record)
    source = "the sha256 argument" if pinned else f"the record {record}"

    if archive.is_file():
        actual = sha256_of(archive)
        if expected is None:
            _write_atomic(record, f"{actual}  {ARCHIVE_NAME}\n")
            if progress:
                _print_hash(actual, record)
            return archive
        if actual != expected:
            raise ChecksumError(
                f"{archive} has SHA-256 {actual}, but {source} expects {expected}: the file was "
                f"changed or corrupted since it was verified. Delete {archive} to download it "
                f"again (and delete {record} if you trust a new upstream file).")
        if not record.is_file() or _read_record(record) != actual:
            _write_atomic(record, f"{actual}  {ARCHIVE_NAME}\n")
        return archive

    tmp, actual = _fetch(url, root, progress)
    if expected is not None and actual != expected:
        tmp.unlink(missing_ok=True)
        raise ChecksumError(
            f"the file downloaded from {url} has SHA-256 {actual}, but {source} expects "
            f"{expected}; the download was deleted. Retry (the transfer may have been "
            f"corrupted); if the server now serves a different file, check it and pass its hash "
            f"as sha256=" + ("" if pinned else f", or delete {record} to accept it") + ".")
    os.replace(tmp, archive)
    _write_atomic(record, f"{actual}  {ARCHIVE_NAME}\n")
    if progress:
        if expected is None:
            _print_hash(actual, record)
        else:
            print(f"verified SHA-256 {actual}", flush=True)
    return archive


def _print_hash(actual: str, record: Path) -> None:
    print(f"SHA-256 of {ARCHIVE_NAME}: {actual}\n"
          f"No checksum was pinned: it is recorded in {record} and later calls verify the "
          f"archive against it. To pin it, pass sha256=\"{actual}\".", flush=True)


def _check_layout(folder: Path, what: str) -> None:
    missing = [d for d in ("PNGImages", "PedMasks") if not (folder / d).is_dir()]
    if missing:
        shown = folder if folder.is_dir() else folder.parent
        found = sorted(p.name for p in shown.iterdir()) if shown.is_dir() else []
        raise FileNotFoundError(
            f"{what} does not have the Penn-Fudan layout: expected {FOLDER_NAME}/PNGImages and "
            f"{FOLDER_NAME}/PedMasks, missing {missing} (found {found})")


def extract_pennfudan(archive: str | Path, root: str | Path) -> Path:
    """Unpack ``archive`` into ``root``; returns ``root/PennFudanPed``.

    Every member name is checked first: one that is absolute or would land outside ``root``
    (``../``, the "zip slip" attack) makes the call fail before anything is written. The
    archive is unpacked into a temporary folder and moved into place only if it holds
    ``PennFudanPed/PNGImages`` and ``PennFudanPed/PedMasks``, so a folder under the final name is
    always complete (an earlier one is replaced).
    """
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a zip archive ({err}); delete it and download "
                         f"it again") from err
    with zf:
        for member in zf.namelist():
            target = (base / member).resolve()
            if Path(member).is_absolute() or member.startswith(("/", "\\")) or \
                    (target != base and base not in target.parents):
                raise ValueError(f"{archive}: member {member!r} would be written outside "
                                 f"{root}; refusing to extract this archive")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extracting."))
        try:
            zf.extractall(tmp)
            _check_layout(tmp / FOLDER_NAME, f"archive {archive}")
            dest = root / FOLDER_NAME
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp / FOLDER_NAME, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


#: What the converter keeps of one image, its COCO image entry and its COCO annotations.
ImageRecord = tuple[dict, list[dict]]


def _instance_box(pixels: np.ndarray) -> tuple[list[int], int]:
    """The COCO box ``[x, y, w, h]`` and pixel count of one instance, given as a boolean mask.

    The box runs from the left edge of the instance's first column to the right edge of its
    last (and likewise for rows), so a one-pixel instance has width and height 1.
    """
    ys, xs = np.nonzero(pixels)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1], len(xs)


def _boxes_from_mask(mask: np.ndarray) -> list[tuple[list[int], int]]:
    """``([x, y, w, h], area)`` per instance id (1..N) of ``mask``, in increasing id order."""
    return [_instance_box(mask == instance) for instance in np.unique(mask) if instance != 0]


def _find_source(src: Path) -> Path:
    """The folder holding ``PNGImages`` and ``PedMasks``: ``src`` itself or its ``PennFudanPed``."""
    if not (src / "PNGImages").is_dir() and (src / FOLDER_NAME / "PNGImages").is_dir():
        src = src / FOLDER_NAME
    _check_layout(src, f"folder {src}")
    return src


def _list_images(src: Path) -> list[str]:
    """The ``.png`` file names in ``src/PNGImages``, sorted; their position gives the image id."""
    names = sorted(p.name for p in (src / "PNGImages").glob("*.png"))
    if not names:
        raise FileNotFoundError(f"no .png images in {src / 'PNGImages'}")
    return names


def _check_val_images(val_images: int, n_images: int) -> None:
    """Refuse a val split that would leave no image to train on (or a negative one)."""
    if not 0 <= val_images < n_images:
        raise ValueError(f"val_images must be in [0, {n_images - 1}] so that training keeps at "
                         f"least one of the {n_images} images, got {val_images}")


def _read_mask(image_file: Path, mask_file: Path) -> np.ndarray:
    """The instance mask of ``image_file`` as a 2-D array, checked to match the image's size."""
    from PIL import Image

    if not mask_file.is_file():
        raise FileNotFoundError(f"no mask for image {image_file}: expected {mask_file}")
    with Image.open(image_file) as im:
        width, height = im.size
    with Image.open(mask_file) as m:
        if m.mode not in ("L", "P", "I", "I;16", "1"):
            raise ValueError(f"{mask_file}: expected a single-channel instance mask, got "
                             f"mode {m.mode}")
        mask = np.asarray(m)
    if mask.shape != (height, width):
        raise ValueError(f"{mask_file} is {mask.shape[1]}x{mask.shape[0]} but its image "
                         f"{image_file} is {width}x{height}")
    return mask


def _image_record(src: Path, image_id: int, name: str, first_annotation_id: int) -> ImageRecord:
    """The COCO image entry of ``name`` and one annotation per instance of its mask.

    Annotations are numbered from ``first_annotation_id``; every one is a "person" (category 1).
    """
    image_file = src / "PNGImages" / name
    mask = _read_mask(image_file, src / "PedMasks" / f"{Path(name).stem}_mask.png")
    height, width = mask.shape
    info = {"id": image_id, "file_name": name, "height": height, "width": width}
    annotations = [{"id": first_annotation_id + k, "image_id": image_id, "category_id": 1,
                    "bbox": bbox, "area": area, "iscrowd": 0}
                   for k, (bbox, area) in enumerate(_boxes_from_mask(mask))]
    return info, annotations


def _image_records(src: Path, names: list[str]) -> dict[str, ImageRecord]:
    """The record of every image, read before anything is written (so a bad mask writes nothing).

    Image ids are 1.. in file-name order and annotation ids are global in that order too, so
    neither depends on the split.
    """
    records: dict[str, ImageRecord] = {}
    next_annotation_id = 1
    for image_id, name in enumerate(names, start=1):
        records[name] = _image_record(src, image_id, name, next_annotation_id)
        next_annotation_id += len(records[name][1])
    return records


def _split_names(names: list[str], val_images: int, seed: int) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}``: a seeded shuffle, its first ``val_images`` to val.

    Without val images there is no ``"val"`` key. Each split is sorted, so it lists its images
    in image-id order.
    """
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    splits = {"train": sorted(order[val_images:])}
    if val_images:
        splits["val"] = sorted(order[:val_images])
    return splits


def _write_split(src: Path, out_root: Path, split: str, members: list[str],
                 records: dict[str, ImageRecord]) -> dict:
    """Copy the images of one split and write its annotation file; returns its counts.

    Images of the other split that an earlier conversion (with another split) left in this
    split's folder are deleted, so the folder holds exactly the images its file lists.
    """
    image_dir = out_root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in set(records) - set(members):
        (image_dir / stale).unlink(missing_ok=True)
    images, annotations = [], []
    for name in members:
        info, objects = records[name]
        shutil.copyfile(src / "PNGImages" / name, image_dir / name)
        images.append(info)
        annotations.extend(objects)
    _write_atomic(out_root / "annotations" / f"instances_{split}.json",
                  json.dumps({"images": images, "annotations": annotations,
                              "categories": CATEGORIES}))
    return {"images": len(images), "boxes": len(annotations)}


def pennfudan_to_coco(src_dir: str | Path, out_root: str | Path,
                      val_images: int = 50, seed: int = 0) -> dict:
    """Convert an extracted Penn-Fudan folder into a COCO dataset with a train and a val split.

    ``src_dir`` is the folder holding ``PNGImages`` and ``PedMasks`` (or its parent). Images
    are shuffled by a NumPy generator seeded with ``seed`` and the first ``val_images`` form the
    val split (``0``: no val split; then train with ``--val-split ''``); the same seed always
    gives the same split. Image ids are 1..170 in file-name order and do not depend on the
    split. Images are copied unchanged to ``out_root/images/<split>/`` and the annotations
    written to ``out_root/annotations/instances_<split>.json`` with one category, ``{"id": 1,
    "name": "person"}``.

    Box convention: for instance id ``k`` of a mask, with ``xmin..xmax`` and ``ymin..ymax`` the
    pixel columns and rows it covers, the COCO box is ``[xmin, ymin, xmax - xmin + 1, ymax -
    ymin + 1]``: it runs from the left edge of its first pixel to the right edge of its last, so
    a one-pixel instance has width 1 (the same convention as
    :mod:`effnet_tutorial.data.shapes`). ``area`` is the instance's pixel count; ``iscrowd`` 0.
    A mask without instances gives an image without annotations (valid training data).

    Raises :class:`FileNotFoundError` naming the file if an image has no mask, and
    :class:`ValueError` if a mask is not single-channel or its size differs from its image's.
    Returns ``{split: {"images": n, "boxes": m}}``.
    """
    src, out_root = _find_source(Path(src_dir)), Path(out_root)
    names = _list_images(src)
    _check_val_images(val_images, len(names))
    records = _image_records(src, names)
    (out_root / "annotations").mkdir(parents=True, exist_ok=True)
    summary = {split: _write_split(src, out_root, split, members, records)
               for split, members in _split_names(names, val_images, seed).items()}
    if not val_images:
        (out_root / "annotations" / "instances_val.json").unlink(missing_ok=True)
    return summary


def prepare_pennfudan(root: str | Path, url: str = PENNFUDAN_URL,
                      sha256: str | None = PENNFUDAN_SHA256, val_images: int = 50,
                      seed: int = 0, progress: bool = True) -> Path:
    """Download, verify, extract and convert Penn-Fudan under ``root``; returns the COCO root.

    ``root`` ends up holding ``PennFudanPed.zip`` (and its ``.sha256`` record), the extracted
    ``PennFudanPed/`` and the COCO dataset ``coco/``, whose path is returned: pass it to
    ``python -m effnet_tutorial train --data``. Each step is skipped when its result is already
    there, so calling it again is cheap and touches neither the network nor the archive. A
    conversion records its ``val_images`` and ``seed`` in ``coco/pennfudan.json`` (written last,
    so it also marks a finished conversion); other values convert again from the extracted
    folder.
    """
    root = Path(root)
    coco = root / "coco"
    marker = coco / "pennfudan.json"
    wanted = {"val_images": val_images, "seed": seed}
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in wanted} == wanted:
            if progress:
                print(f"Penn-Fudan already prepared in {coco}: {done.get('summary')}", flush=True)
            return coco
    folder = root / FOLDER_NAME
    if not ((folder / "PNGImages").is_dir() and (folder / "PedMasks").is_dir()):
        archive = download_pennfudan(root, url, sha256, progress)
        folder = extract_pennfudan(archive, root)
    marker.unlink(missing_ok=True)
    summary = pennfudan_to_coco(folder, coco, val_images, seed)
    _write_atomic(marker, json.dumps({**wanted, "summary": summary}))
    if progress:
        print(f"Penn-Fudan in COCO format in {coco}: {summary}", flush=True)
    return coco
