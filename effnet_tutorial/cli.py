"""The command line ``python -m effnet_tutorial {shapes,train,evaluate,predict}``.

Installed as the ``effnet-tutorial`` script too. A data folder is COCO-shaped:
``<data>/annotations/instances_<split>.json`` with images in ``<data>/images/<split>/`` (as
:func:`~effnet_tutorial.data.shapes.write_coco_dataset` writes) or ``<data>/<split>/`` (as COCO
2017 ships). Training writes into ``--output``: ``last.pth`` (the checkpoint that ``--resume``
continues from: the model, its EMA, the optimiser's momentum, the gradient scaler and the RNG
states, about three times the model's size), ``model.pth`` (the EMA weights alone, for
``evaluate`` and ``predict``), ``metrics.jsonl`` and ``curves.png``. A folder that already holds a
run is refused unless ``--resume`` (continue it) or ``--overwrite`` (remove that run's files,
nothing else, and start afresh). ``--recipe`` picks the starting values of the flags: ``paper``
(the paper's D0 recipe) or ``cpu`` (the book's 30-minute CPU run); flags given explicitly
override them, and with ``--resume`` the checkpoint's settings come first. Checkpoints describe
their model, so ``evaluate`` and ``predict`` need no ``--model`` or ``--image-size``; ``predict``
takes image files and folders (every image in them).

Every mistake the command can see before it starts working (a flag's value, a missing file, a
checkpoint that does not fit) ends the command with one line, ``error: ...``, and exit status 2,
and creates no output folder.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .extras import MissingDependency, require

#: What ``predict`` reads from a folder (other files in it are skipped).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

#: The files whose presence means an output folder holds a run.
_RUN_MARKERS = ("last.pth", "model.pth", "metrics.jsonl")


def dataset_paths(data: Path, split: str) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of a split in a COCO-shaped folder; clear error if absent.
    """
    annotation = data / "annotations" / f"instances_{split}.json"
    for image_dir in (data / "images" / split, data / split):
        if image_dir.is_dir() and annotation.is_file():
            return image_dir, annotation
    raise FileNotFoundError(
        f"no split {split!r} in {data}: expected {annotation} and images in "
        f"{data / 'images' / split} or {data / split}")


# ----------------------------------------------------------------------------- flag values
def _number(kind: type, least: float, strict: bool = True, most: float | None = None,
            why: str = "") -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) >= ``least`` (> with ``strict``),
    <= ``most`` if given; else argparse's ``error: argument --flag: ...`` and exit status 2."""
    def parse(text: str) -> Any:
        bound = f"{'>' if strict else '>='} {least:g}" + (f" and <= {most:g}" if most else "")
        wanted = f"{'an integer' if kind is int else 'a finite number'} {bound}{why}"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not (math.isfinite(value) and (value > least if strict else value >= least)
                and (most is None or value <= most)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


_POSITIVE_INT = _number(int, 0)
_COUNT = _number(int, 0, strict=False)
_POSITIVE = _number(float, 0.0)
_TRAIN_BATCH = _number(int, 2, strict=False,
                       why=" (batch norm normalises over the batch: a batch of one image trains "
                           "badly and fails on 1x1 feature maps)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: ...)`` to every flag with a fixed default; flags whose default depends on
    ``--recipe`` or the checkpoint say so in their own help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- shapes
def _shapes(args: argparse.Namespace) -> None:
    from .data.shapes import write_coco_dataset

    existing = [args.out / "annotations" / f"instances_{split}.json" for split in ("train", "val")]
    existing = [p for p in existing if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds a dataset ({existing[0]}); pass "
                              "--overwrite to replace its train and val splits, or choose "
                              "another --out")
    for split, n, seed in (("train", args.train, args.seed), ("val", args.val, args.seed + 1)):
        path = write_coco_dataset(args.out, split, n, seed, args.size, args.size, args.max_objects)
        print(f"wrote {n} images and {path}")


# ----------------------------------------------------------------------------- train
#: ``train`` flags whose starting values come from ``--recipe`` (or, resuming, the checkpoint),
#: and the :class:`~effnet_tutorial.train.TrainConfig` field each one sets.
_RECIPE_FLAGS = {"model": None, "image_size": None, "epochs": "epochs",
                 "minutes": "time_budget_minutes", "batch_size": "batch_size",
                 "optimizer": "optimizer", "lr": "lr", "warmup_epochs": "warmup_epochs",
                 "ema_decay": "ema_decay", "jitter_min": None, "jitter_max": None,
                 "workers": "num_workers", "log_every": "log_every",
                 "checkpoint_every": "checkpoint_every", "clock": "clock"}


def _recipe_help(text: str, flag: str, unset: str = "automatic") -> str:
    """``text`` plus the flag's starting value under each recipe (``unset`` for None)."""
    from .recipes import COMMAND_LINE_RECIPES

    listed = "; ".join(f"--recipe {name}: {unset if r[flag] is None else r[flag]}"
                       for name, r in COMMAND_LINE_RECIPES.items())
    return f"{text} (default: {listed}; resuming: the checkpoint's)".replace("%", "%%")


def _train_settings(args: argparse.Namespace, meta: dict | None) -> dict[str, Any]:
    """Each recipe flag's value: given explicitly, else the checkpoint's (resuming), else the
    recipe's."""
    from .recipes import COMMAND_LINE_RECIPES

    values = dict(COMMAND_LINE_RECIPES[args.recipe])
    if meta is not None:
        saved = meta.get("train_config") or {}
        info = meta.get("run_info") or {}
        values.update({flag: saved[field] for flag, field in _RECIPE_FLAGS.items()
                       if field and field in saved})
        values.update(model=meta.get("model") or values["model"], image_size=meta.get("image_size"))
        if "jitter" in info:
            values.update(jitter_min=info["jitter"][0], jitter_max=info["jitter"][1])
    values.update({flag: getattr(args, flag) for flag in _RECIPE_FLAGS
                   if getattr(args, flag) is not None})
    return values


def _check_output(args: argparse.Namespace) -> Path | None:
    """Refuse an output folder that holds a run unless ``--resume`` or ``--overwrite``; returns
    ``last.pth`` when resuming."""
    output = args.output
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --output and --overwrite deletes it: "
                         "pass one of them")
    if args.resume and args.pretrained:
        raise ValueError("--pretrained starts a new run from the COCO weights; a resumed run "
                         "takes its weights from the checkpoint: drop one of the two flags")
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file, not a folder")
    found = [name for name in _RUN_MARKERS if (output / name).exists()]
    if found and not (args.resume or args.overwrite):
        raise FileExistsError(
            f"--output {output} already holds a run ({', '.join(found)}). Pass --resume to "
            "continue it, --overwrite to delete that run's files and start afresh, or choose "
            "another folder")
    if not args.resume:
        return None
    last = output / "last.pth"
    if not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}")
    return last


def _check_resume(last: Path, meta: dict | None, wanted: dict) -> None:
    """Raise unless the checkpoint's run is the one these flags and this data describe."""
    from .runs import run_mismatches

    if meta is None:
        raise ValueError(f"--resume: {last} does not describe its run (no 'meta' entry), so it "
                         "cannot be checked against these flags; start a new run (--overwrite)")
    problems = run_mismatches(meta, wanted)
    if problems:
        raise ValueError(f"--resume: {last} is another run than these flags and this data "
                         "describe: " + "; ".join(problems))


def _remove_run_files(output: Path) -> None:
    """Delete the files an earlier run wrote into ``output`` (``--overwrite``), nothing else."""
    from .runs import RUN_FILES

    removed = [name for name in RUN_FILES if (output / name).is_file()]
    for name in removed:
        (output / name).unlink()
    if removed:
        print(f"--overwrite: removed {', '.join(removed)} of the earlier run in {output}")


def _train(args: argparse.Namespace) -> None:
    from .checkpoints import checkpoint_meta, read_checkpoint, require_detector

    last = _check_output(args)
    meta = checkpoint_meta(read_checkpoint(last)) if last else None
    values = _train_settings(args, meta)
    require_detector(values["model"])
    if values["jitter_min"] > values["jitter_max"]:
        raise ValueError(f"--jitter-min {values['jitter_min']} is above --jitter-max "
                         f"{values['jitter_max']}")
    if args.val_split and args.eval_every:  # found now, not after the first epoch
        require("pycocotools", purpose="COCO evaluation",
                alternative="pass --val-split '' to train without evaluation")
    trainer, val = _build_trainer(args, values, meta, last)
    _fit(args, trainer, val, last)


def _build_trainer(args: argparse.Namespace, values: dict[str, Any], meta: dict | None,
                   last: Path | None) -> tuple[Any, Any]:
    """The data, the config, the model (seeded first) and the trainer, each checked; with
    ``--resume``, checked against the checkpoint's run. Nothing is written yet."""
    import torch

    from .data.coco import CocoDetection
    from .data.transforms import train_transforms
    from .efficientdet import DETECTOR_PRESETS
    from .factory import create_model
    from .train import SeededAugmentation, TrainConfig, Trainer

    raw = CocoDetection(*dataset_paths(args.data, args.train_split))
    val = CocoDetection(*dataset_paths(args.data, args.val_split)) if args.val_split else None
    size = values["image_size"] or DETECTOR_PRESETS[values["model"]].image_size
    config = TrainConfig(
        **{field: values[flag] for flag, field in _RECIPE_FLAGS.items() if field},
        seed=args.seed, sync_bn=args.sync_bn, amp=not args.no_amp)
    if last:
        _check_resume(last, meta, {
            "model": values["model"], "num_classes": raw.num_classes,
            "class_names": raw.class_names, "image_size": size,
            "batch_size": config.batch_size, "world_size": int(os.environ.get("WORLD_SIZE", 1)),
            "train_config": {"optimizer": config.optimizer}})
    torch.manual_seed(args.seed)  # before the model is built: the initial weights too
    options = dict(meta.get("model_options") or {}) if meta else {}
    model = create_model(values["model"], num_classes=raw.num_classes, pretrained=args.pretrained,
                         image_size=size, **options)
    jitter = (values["jitter_min"], values["jitter_max"])
    train_set = SeededAugmentation(raw, train_transforms(size, jitter), args.seed)
    trainer = Trainer(model, train_set, config, args.output, run_info={
        "recipe": args.recipe, "jitter": list(jitter), "eval_every": args.eval_every,
        "data": str(args.data), "train_split": args.train_split, "val_split": args.val_split})
    return trainer, val


def _fit(args: argparse.Namespace, trainer: Any, val: Any, last: Path | None) -> None:
    """Check the output folder, lock it, clear (``--overwrite``) or resume, train, evaluate
    every ``--eval-every`` epochs and after the last step (if not just done), plot."""
    from .evaluate import evaluate_model
    from .runs import RunLock, check_writable

    size = trainer.model.config.image_size
    evaluated: set[int] = set()  # steps evaluated at

    def evaluate(t: Any, epoch: float) -> None:
        stats = evaluate_model(t.eval_model(), val, size)
        t.log({"step": t.step, "epoch": epoch, **{k: stats[k] for k in ("AP", "AP50", "AP75")}})
        evaluated.add(t.step)
        print(f"epoch {epoch:g}: AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}")

    def on_epoch_end(t: Any, epoch: int) -> None:
        if val is not None and t.rank == 0 and args.eval_every and epoch % args.eval_every == 0:
            evaluate(t, epoch)

    if trainer.rank == 0:
        check_writable(args.output, trainer.checkpoint_bytes())
    with RunLock(args.output) if trainer.rank == 0 else nullcontext():
        if args.overwrite and trainer.rank == 0:
            _remove_run_files(args.output)
        if last:
            trainer.load_checkpoint(last)
            print(f"resumed from {last} at step {trainer.step}")
        start = trainer.step
        trainer.fit(on_epoch_end=on_epoch_end)
        if trainer.rank == 0:
            not_yet = trainer.step > start and trainer.step not in evaluated
            if val is not None and args.eval_every and not_yet:  # the final AP
                evaluate(trainer, trainer.step / trainer.steps_per_epoch)
            _plot_curves(trainer)


def _plot_curves(trainer: Any) -> None:
    """``curves.png`` from ``metrics.jsonl``, and where everything is."""
    import matplotlib

    matplotlib.use("Agg")
    from .viz import plot_metrics, read_metrics

    out = trainer.output_dir
    ax = plot_metrics(read_metrics(trainer.metrics_path))
    ax.figure.savefig(out / "curves.png", dpi=100, bbox_inches="tight")
    print(f"done: {out / 'last.pth'} (to resume), {out / 'model.pth'} (to evaluate and predict), "
          f"{trainer.metrics_path}, {out / 'curves.png'}")


# ----------------------------------------------------------------------------- evaluate, predict
def _load_model(args: argparse.Namespace) -> Any:
    """The checkpoint's model, as its meta describes it (``--model``/``--image-size`` only where
    the file has no description, or to override its size)."""
    from .checkpoints import load_trained

    return load_trained(args.checkpoint, args.model, args.image_size)


def _evaluate(args: argparse.Namespace) -> None:
    require("pycocotools", purpose="COCO evaluation")
    from .data.coco import CocoDetection
    from .evaluate import STAT_NAMES, evaluate_model

    dataset = CocoDetection(*dataset_paths(args.data, args.split))
    model = _load_model(args)
    names = model.class_names  # None for a file that does not record them
    if names and names != dataset.class_names:
        raise ValueError(
            f"{args.checkpoint} predicts the classes {', '.join(names)}, but split "
            f"{args.split!r} of {args.data} has {', '.join(dataset.class_names)}: evaluate a "
            "model on the classes it was trained for")
    size = model.config.image_size
    stats = evaluate_model(model, dataset, size, args.batch_size, args.soft_nms,
                           results_file=args.results)
    print(f"{model.model_name} at {size}x{size} pixels, {args.checkpoint}")
    for name in STAT_NAMES[:6]:
        print(f"{name:>10}: {stats[name]:.4f}")
    for cat, name in zip(dataset.category_ids, dataset.class_names):
        print(f"{'AP ' + name:>10}: {stats['per_class_ap'][cat]:.4f}")


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The images ``predict`` reads: each file given, and every image (:data:`IMAGE_SUFFIXES`) in
    each folder given, sorted by name. A missing path, a folder without images or a file that is
    not a readable image is an error naming it, raised before any prediction."""
    from PIL import Image, UnidentifiedImageError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path} is a folder without images "
                                        f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    for file in files:
        try:
            with Image.open(file) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise ValueError(f"cannot read {file} as an image ({err}); pass image files or "
                             "folders of them") from err
    return files


def _output_names(files: Sequence[Path]) -> list[str]:
    """``<stem>_detections.png`` per image, numbered where two images share a stem."""
    names, seen = [], set()
    for file in files:
        name, k = f"{file.stem}_detections.png", 1
        while name in seen:
            k += 1
            name = f"{file.stem}_{k}_detections.png"
        seen.add(name)
        names.append(name)
    return names


def _predict(args: argparse.Namespace) -> None:
    files = image_files(args.images)
    model = _load_model(args)
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    matplotlib.use("Agg")
    from .viz import draw_detections

    names = model.class_names
    args.output.mkdir(parents=True, exist_ok=True)
    records = []
    for path, out_name in zip(files, _output_names(files)):
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"))
        det = model.predict(image, score_threshold=args.score_threshold, soft_nms=args.soft_nms)[0]
        ax = draw_detections(image, det, class_names=names, score_threshold=args.score_threshold)
        out = args.output / out_name
        ax.figure.savefig(out, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        labels = det["labels"].tolist()
        records.append({"image": str(path), "boxes_xyxy": det["boxes"].tolist(),
                        "scores": det["scores"].tolist(), "labels": labels,
                        "names": [names[i] for i in labels] if names else None})
        print(f"{path}: {len(det['scores'])} detection(s) -> {out}")
    (args.output / "detections.json").write_text(json.dumps(records, indent=1))


# ----------------------------------------------------------------------------- the parser
def _add_train_parser(sub: Any) -> None:
    from .recipes import COMMAND_LINE_RECIPES

    p = sub.add_parser(
        "train", formatter_class=_HelpFormatter, help="train a detector on a COCO-format folder",
        description="Train a detector. The output folder gets last.pth (model, EMA, optimiser "
        "momentum, gradient scaler and RNG states: what resuming exactly needs, about three "
        "times the model), model.pth (the EMA weights alone, for evaluate and predict), "
        "metrics.jsonl and curves.png.")
    p.add_argument("--data", type=Path, required=True, help="COCO-format folder")
    p.add_argument("--output", type=Path, required=True,
                   help="folder for checkpoints, metrics and plots; one that holds a run needs "
                        "--resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last.pth (same model, classes, "
                        "input size and batch; unspecified flags take the run's values; metrics "
                        "lines of the steps it redoes move to metrics.redone.jsonl)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --output that holds a run: delete that run's files "
                        "(last.pth, model.pth, metrics.jsonl, curves.png), nothing else")
    p.add_argument("--recipe", choices=sorted(COMMAND_LINE_RECIPES), default="paper",
                   help="starting values of the flags below: the paper's D0 recipe, or the "
                        "book's from-scratch CPU run; explicit flags override them")
    p.add_argument("--model", help=_recipe_help("a detector name (list_models('detector'))",
                                                "model"))
    p.add_argument("--train-split", default="train", help="split to train on")
    p.add_argument("--val-split", default="val", help="'' to skip evaluation")
    p.add_argument("--pretrained", action="store_true",
                   help="start from the COCO weights (internet)")
    p.add_argument("--image-size", type=_POSITIVE_INT,
                   help=_recipe_help("input side in pixels (automatic: the model's)", "image_size"))
    p.add_argument("--epochs", type=_POSITIVE, help=_recipe_help("epochs", "epochs"))
    p.add_argument("--minutes", type=_POSITIVE,
                   help=_recipe_help("train for this much training time instead of --epochs "
                                     "(the cosine spans it)", "minutes", "none"))
    p.add_argument("--batch-size", type=_TRAIN_BATCH,
                   help=_recipe_help("images per step and process (at least 2)", "batch_size"))
    p.add_argument("--optimizer", choices=("sgd", "adamw"),
                   help=_recipe_help("sgd (the paper's) or adamw (faster from scratch on short "
                                     "runs)", "optimizer"))
    p.add_argument("--lr", type=_POSITIVE,
                   help=_recipe_help("peak learning rate (automatic: 0.08 per 64 images of the "
                                     "global batch for sgd, 1e-3 for adamw)", "lr"))
    p.add_argument("--warmup-epochs", type=_number(float, 0.0, strict=False),
                   help=_recipe_help("linear warm-up", "warmup_epochs"))
    p.add_argument("--ema-decay", type=_number(float, 0.0, strict=False, most=0.999999),
                   help=_recipe_help("EMA decay (0: no EMA)", "ema_decay"))
    p.add_argument("--jitter-min", type=_POSITIVE,
                   help=_recipe_help("smallest scale of the scale jitter", "jitter_min"))
    p.add_argument("--jitter-max", type=_POSITIVE,
                   help=_recipe_help("largest scale of the scale jitter", "jitter_max"))
    p.add_argument("--eval-every", type=_COUNT, default=1,
                   help="epochs between evaluations (0: none)")
    p.add_argument("--workers", type=_COUNT, help=_recipe_help("data-loading processes",
                                                               "workers"))
    p.add_argument("--log-every", type=_POSITIVE_INT,
                   help=_recipe_help("steps between lines of metrics.jsonl", "log_every"))
    p.add_argument("--checkpoint-every", type=_POSITIVE_INT,
                   help=_recipe_help("steps between checkpoints (also at every epoch end)",
                                     "checkpoint_every"))
    p.add_argument("--clock", choices=("wall", "process"),
                   help=_recipe_help("how --minutes is measured: wall clock, or this process's "
                                     "CPU time", "clock"))
    p.add_argument("--seed", type=_COUNT, default=0,
                   help="seeds the initial weights, the data order and the augmentation")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.set_defaults(run=_train)


def _add_checkpoint_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="last.pth or model.pth of a run, or a plain state dict (then --model)")
    p.add_argument("--model", help="only for a file that does not name its model (a plain state "
                                   "dict); must agree with the checkpoint's (default: the "
                                   "checkpoint's)")
    p.add_argument("--image-size", type=_POSITIVE_INT,
                   help="input side in pixels (default: the checkpoint's, else the model's)")
    p.add_argument("--soft-nms", action="store_true",
                   help="Soft-NMS (Gaussian) instead of hard NMS")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    description = re.sub(r":\w+:|`", "", __doc__.split("\n")[0])  # no reStructuredText marks
    parser = argparse.ArgumentParser(prog="effnet-tutorial", description=description)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("shapes", formatter_class=_HelpFormatter,
                       help="generate the synthetic shapes dataset (COCO format)")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--train", type=_POSITIVE_INT, default=2000, help="training images")
    p.add_argument("--val", type=_POSITIVE_INT, default=200, help="validation images")
    p.add_argument("--size", type=_number(int, 32, strict=False), default=256,
                   help="image side in pixels")
    p.add_argument("--max-objects", type=_POSITIVE_INT, default=6,
                   help="objects per image, at most")
    p.add_argument("--seed", type=_COUNT, default=0, help="seed of the scenes (val: seed + 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the train and val splits of a dataset already in --out")
    p.set_defaults(run=_shapes)

    _add_train_parser(sub)

    p = sub.add_parser("evaluate", formatter_class=_HelpFormatter,
                       help="COCO AP of a checkpoint on a COCO-format split")
    _add_checkpoint_flags(p)
    p.add_argument("--data", type=Path, required=True, help="COCO-format folder")
    p.add_argument("--split", default="val", help="split to evaluate on")
    p.add_argument("--batch-size", type=_POSITIVE_INT, default=8, help="images per forward pass")
    p.add_argument("--results", type=Path, help="write COCO results JSON here")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", formatter_class=_HelpFormatter,
                       help="draw detections on images",
                       description="Draw a checkpoint's detections, labelled with its class "
                                   "names, on images; writes <name>_detections.png per image "
                                   "and detections.json into --output (replacing files of the "
                                   "same name).")
    p.add_argument("images", nargs="+", type=Path,
                   help="image files, or folders: every image in a folder (by suffix: "
                        f"{' '.join(IMAGE_SUFFIXES)}), other files skipped")
    _add_checkpoint_flags(p)
    p.add_argument("--output", type=Path, default=Path("predictions"),
                   help="folder for the drawings and detections.json")
    p.add_argument("--score-threshold", type=_number(float, 0.0, strict=False, most=1.0),
                   default=0.3, help="keep detections scoring at least this")
    p.set_defaults(run=_predict)
    return parser


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one line, ``warning: ...``, as the errors are."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m effnet_tutorial`` and the ``effnet-tutorial`` script.

    Returns 0, or 2 after printing ``error: <message>`` (argparse itself exits with status 2 for
    a malformed flag), or 130 when interrupted (the last checkpoint stays; ``--resume``).
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args.run(args)
        except (OSError, ValueError, FloatingPointError, MissingDependency) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; a training run continues from its last checkpoint with --resume",
                  file=sys.stderr)
            return 130
    return 0
