"""The command line: ``python -m effnet_tutorial {shapes,train,evaluate,predict}`` (or ``effnet-tutorial``).

A data folder is COCO-shaped: ``<data>/annotations/instances_<split>.json`` with images in
``<data>/images/<split>/`` (as :func:`~effnet_tutorial.data.shapes.write_coco_dataset` writes) or
``<data>/<split>/`` (as COCO 2017 ships). Training writes checkpoints, ``metrics.jsonl`` and plots
into ``--output``; ``--resume`` continues from ``<output>/last.pth``.

In the book: Chapter 14, *Training EfficientDet-D0*.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Sequence

import torch

from .extras import MissingDependency, require


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


def load_trained(model_name: str, checkpoint: Path, image_size: int | None = None,
                 use_ema: bool = True):
    """A detector from a training checkpoint (its EMA weights unless ``use_ema=False``)."""
    from .factory import create_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    options = {"image_size": image_size} if image_size else {}
    if "model" not in state:  # a plain state dict (ours or effdet's)
        return create_model(model_name, checkpoint_path=str(checkpoint), **options)
    model = create_model(model_name, num_classes=state.get("num_classes") or 90, **options)
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights)
    return model


def _shapes(args: argparse.Namespace) -> None:
    from .data.shapes import write_coco_dataset

    for split, n, seed in (("train", args.train, args.seed), ("val", args.val, args.seed + 1)):
        path = write_coco_dataset(args.out, split, n, seed, args.size, args.size, args.max_objects)
        print(f"wrote {n} images and {path}")


def _train(args: argparse.Namespace) -> None:
    if args.val_split and args.eval_every:  # found now, not after the first epoch
        require("pycocotools", purpose="COCO evaluation",
                alternative="pass --val-split '' to train without evaluation")
    from .data.coco import CocoDetection
    from .data.transforms import train_transforms
    from .evaluate import evaluate_model
    from .factory import create_model
    from .train import SeededAugmentation, TrainConfig, Trainer

    image_dir, annotation = dataset_paths(args.data, args.train_split)
    raw = CocoDetection(image_dir, annotation)
    options = {"image_size": args.image_size} if args.image_size else {}
    model = create_model(args.model, num_classes=raw.num_classes, pretrained=args.pretrained, **options)
    size = model.config.image_size
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, time_budget_minutes=args.minutes,
                         warmup_epochs=args.warmup_epochs, ema_decay=args.ema_decay, seed=args.seed,
                         num_workers=args.workers, sync_bn=args.sync_bn, amp=not args.no_amp,
                         log_every=args.log_every)
    train_set = SeededAugmentation(raw, train_transforms(size, (args.jitter_min, args.jitter_max)), args.seed)
    trainer = Trainer(model, train_set, config, args.output)
    last = Path(args.output) / "last.pth"
    if args.resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last}")
        trainer.load_checkpoint(last)
        print(f"resumed from {last} at step {trainer.step}")
    val = None
    if args.val_split:
        val = CocoDetection(*dataset_paths(args.data, args.val_split))

    def on_epoch_end(t: Trainer, epoch: int) -> None:
        if val is not None and t.rank == 0 and args.eval_every and epoch % args.eval_every == 0:
            stats = evaluate_model(t.eval_model(), val, size)
            t.log({"step": t.step, "epoch": epoch, **{k: stats[k] for k in ("AP", "AP50", "AP75")}})
            print(f"epoch {epoch}: AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}")

    trainer.fit(on_epoch_end=on_epoch_end)
    if trainer.rank == 0:
        from .viz import plot_metrics, read_metrics
        import matplotlib
        matplotlib.use("Agg")
        ax = plot_metrics(read_metrics(trainer.metrics_path))
        ax.figure.savefig(Path(args.output) / "curves.png", dpi=100, bbox_inches="tight")
        print(f"done: {last}, {trainer.metrics_path}, {Path(args.output) / 'curves.png'}")


def _evaluate(args: argparse.Namespace) -> None:
    require("pycocotools", purpose="COCO evaluation")
    from .data.coco import CocoDetection
    from .evaluate import STAT_NAMES, evaluate_model

    model = load_trained(args.model, args.checkpoint, args.image_size)
    dataset = CocoDetection(*dataset_paths(args.data, args.split))
    stats = evaluate_model(model, dataset, model.config.image_size, args.batch_size, args.soft_nms,
                           results_file=args.results)
    for name in STAT_NAMES[:6]:
        print(f"{name:>10}: {stats[name]:.4f}")
    for cat, name in zip(dataset.category_ids, dataset.class_names):
        print(f"{'AP ' + name:>10}: {stats['per_class_ap'][cat]:.4f}")


def _predict(args: argparse.Namespace) -> None:
    import matplotlib
    import numpy as np
    from PIL import Image

    matplotlib.use("Agg")
    from .viz import draw_detections

    model = load_trained(args.model, args.checkpoint, args.image_size)
    args.output.mkdir(parents=True, exist_ok=True)
    records = []
    for path in args.images:
        image = np.asarray(Image.open(path).convert("RGB"))
        det = model.predict(image, score_threshold=args.score_threshold, soft_nms=args.soft_nms)[0]
        ax = draw_detections(image, det, score_threshold=args.score_threshold)
        out = args.output / (Path(path).stem + "_detections.png")
        ax.figure.savefig(out, dpi=100, bbox_inches="tight")
        records.append({"image": str(path), "boxes_xyxy": det["boxes"].tolist(),
                        "scores": det["scores"].tolist(), "labels": det["labels"].tolist()})
        print(f"{path}: {len(det['scores'])} detection(s) -> {out}")
    (args.output / "detections.json").write_text(json.dumps(records, indent=1))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="effnet-tutorial", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("shapes", help="generate the synthetic shapes dataset (COCO format)")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--val", type=int, default=200, help="validation images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--max-objects", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_shapes)

    p = sub.add_parser("train", help="train a detector on a COCO-format folder")
    p.add_argument("--model", default="tf_efficientdet_d0", help="a detector name (list_models())")
    p.add_argument("--data", type=Path, required=True, help="COCO-format folder")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="'' to skip evaluation")
    p.add_argument("--output", type=Path, required=True, help="folder for checkpoints, metrics, plots")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last.pth")
    p.add_argument("--pretrained", action="store_true", help="start from the COCO weights (internet)")
    p.add_argument("--image-size", type=int, default=0, help="input side (default: the model's)")
    p.add_argument("--epochs", type=float, default=300.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd (the paper's) or adamw (faster from scratch on short runs)")
    p.add_argument("--lr", type=float, default=None, help="default: 0.08 per 64 images of the global batch (batch size x processes) for sgd, 1e-3 for adamw")
    p.add_argument("--minutes", type=float, default=None,
                   help="train for this much training time instead of --epochs (the cosine spans it)")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--jitter-min", type=float, default=0.1)
    p.add_argument("--jitter-max", type=float, default=2.0)
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--log-every", type=int, default=10, help="steps between lines of metrics.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="COCO AP of a checkpoint on a COCO-format split")
    p.add_argument("--model", default="tf_efficientdet_d0")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--soft-nms", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="write COCO results JSON here")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("predict", help="draw detections on images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", default="tf_efficientdet_d0")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--output", type=Path, default=Path("predictions"))
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--soft-nms", action="store_true")
    p.set_defaults(run=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m effnet_tutorial`` and the ``effnet-tutorial`` script."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError, FloatingPointError, MissingDependency) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
