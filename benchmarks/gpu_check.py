"""Check the GPU setting of the training chapter (``recipes.GPU_SHAPES``) and record what it measured.

One command, for a machine with a CUDA GPU (a Colab T4, or any other)::

    python benchmarks/gpu_check.py                  # 300 steps in mixed precision: speed, memory, loss
    python benchmarks/gpu_check.py --steps 7500 --train-images 6000   # the chapter's whole run

and, to check the same setting where there is no GPU (slowly)::

    python benchmarks/gpu_check.py --cpu --steps 200 --record

It trains ``efficientdet_d0`` with the recipe's batch (16), input size (512), data, augmentation,
optimiser and EMA through the package's ``Trainer``, and records: the device; the memory of one
training step (``benchmark.memory.training_step_memory``: the trainer's state and the step's peak
on top, the CUDA allocator's peak or, on a CPU, the profiler's exact tensor peak); seconds and
images per training step after the first ten; the logged loss, and whether its mean over the last
fifth of the logged steps is below the first fifth's; the projected time of the chapter's
7,500-step run at the measured speed; and, with ``--eval``, the COCO AP of the EMA on the
validation split. The dataset is the recipe's, with ``--train-images`` images (default 800:
fewer than the recipe's 6,000 so that writing them takes a minute, which shortens the warm-up,
counted in epochs, accordingly).

The summary is printed and written to ``benchmarks/results/gpu_check/{device}.json``; with
``--record`` it also replaces the record that ships with the package
(``effnet_tutorial/benchmark/measured/gpu_setting_{cpu|cuda}.json``), which Chapter 14 reads.
Without a CUDA device and without ``--cpu`` it stops with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "gpu_check"
MEASURED = HERE.parent / "effnet_tutorial" / "benchmark" / "measured"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="training steps to run")
    p.add_argument("--train-images", type=int, default=800, help="training images to write")
    p.add_argument("--cpu", action="store_true",
                   help="allow running without a CUDA device, on the CPU (slow)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: all)")
    p.add_argument("--eval", action="store_true", help="evaluate the EMA on the val split at the end")
    p.add_argument("--record", action="store_true", help="update the record the package ships")
    p.add_argument("--data", type=Path, default=OUT / "data")
    args = p.parse_args(argv)
    if args.steps < 12:
        p.error("--steps must be at least 12 (the first ten are not timed)")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from effnet_tutorial.benchmark.timing import machine_info

    return f"CPU {machine_info(torch.get_num_threads())['cpu']}, {os.cpu_count()} cores"


def loss_falls(losses: list[float]) -> tuple[float, float, bool]:
    """Mean loss over the first and the last fifth of the logged steps, and whether it fell."""
    k = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    return first, last, last < first


def run(args: argparse.Namespace) -> dict:
    from effnet_tutorial import create_model, recipes
    from effnet_tutorial.benchmark.memory import training_step_memory
    from effnet_tutorial.data.coco import CocoDetection
    from effnet_tutorial.data.transforms import collate, train_transforms
    from effnet_tutorial.train import SeededAugmentation, Trainer
    from effnet_tutorial.utils import try_gpu
    from effnet_tutorial.viz import read_metrics

    device = try_gpu()  # the Trainer picks the same device
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = replace(recipes.GPU_SHAPES, train_images=args.train_images)
    if device.type == "cpu":
        recipe = replace(recipe, num_workers=0)
    root = recipes.write_shapes_data(args.data / f"shapes_{recipe.image_size}_{recipe.train_images}", recipe)
    train_raw = CocoDetection(root / "images" / "train", root / "annotations" / "instances_train.json")
    train_set = SeededAugmentation(train_raw, train_transforms(recipe.image_size, recipe.jitter), recipe.seed)
    config = recipe.train_config(log_every=5, checkpoint_every=10 ** 9)
    out = OUT / f"run_{device.type}"
    for name in ("metrics.jsonl", "last.pth", "model.pth"):
        (out / name).unlink(missing_ok=True)

    torch.manual_seed(recipe.seed)
    model = create_model("efficientdet_d0", num_classes=train_raw.num_classes, image_size=recipe.image_size)
    memory_trainer = Trainer(model, train_set, config, out / "memory")
    images, targets = collate([train_set[i] for i in range(recipe.batch_size)])
    images, targets = memory_trainer.prepare_batch((images, targets))
    memory = training_step_memory(memory_trainer, images, targets)
    if device.type == "cuda":
        memory["max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del memory_trainer, model

    torch.manual_seed(recipe.seed)
    model = create_model("efficientdet_d0", num_classes=train_raw.num_classes, image_size=recipe.image_size)
    trainer = Trainer(model, train_set, config, out)
    stamps: list[float] = []
    original = trainer.train_step

    def timed_step(images, targets):
        stats = original(images, targets)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return stats

    trainer.train_step = timed_step
    start = time.perf_counter()
    trainer.fit(max_steps=args.steps)
    wall = time.perf_counter() - start
    per_step = statistics.median(b - a for a, b in zip(stamps[10:], stamps[11:]))
    logged = [r for r in read_metrics(trainer.metrics_path) if "loss" in r and r.get("event") is None]
    first, last, falls = loss_falls([r["loss"] for r in logged])
    full = recipes.GPU_SHAPES
    summary = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "amp": trainer.use_amp,
        "recipe": {"image_size": recipe.image_size, "batch_size": recipe.batch_size,
                   "train_images": recipe.train_images, "min_size": recipe.min_size,
                   "jitter": list(recipe.jitter), "optimizer": recipe.optimizer, "lr": recipe.lr},
        "steps": trainer.step, "wall_s": wall, "seconds_per_step": per_step,
        "images_per_s": recipe.batch_size / per_step,
        "loss": [{"step": r["step"], "loss": r["loss"], "lr": r["lr"]} for r in logged],
        "loss_first_fifth": first, "loss_last_fifth": last, "loss_falls": falls,
        "memory": memory,
        "full_run_steps": full.steps(), "full_run_minutes_projected": full.steps() * per_step / 60,
    }
    if args.eval:
        from effnet_tutorial.evaluate import evaluate_model

        val = CocoDetection(root / "images" / "val", root / "annotations" / "instances_val.json")
        stats = evaluate_model(trainer.eval_model(), val, recipe.image_size)
        summary["final"] = {k: stats[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")}
    return summary


def main(argv=None) -> int:
    args = parse(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; pass --cpu to check the setting on the CPU, slowly",
              file=sys.stderr)
        return 2
    summary = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=1) + "\n"
    (OUT / f"{summary['device_type']}.json").write_text(text)
    if args.record:
        (MEASURED / f"gpu_setting_{summary['device_type']}.json").write_text(text)
    m = summary["memory"]
    print(f"{summary['device']}: {summary['steps']} steps, {summary['seconds_per_step']:.3f} s/step "
          f"({summary['images_per_s']:.1f} images/s), AMP {summary['amp']}")
    print(f"loss {summary['loss_first_fifth']:.3f} (first fifth) -> {summary['loss_last_fifth']:.3f} "
          f"(last fifth): {'falls' if summary['loss_falls'] else 'DOES NOT FALL'}")
    print(f"memory: state {m['state_mb']:.0f} MB + step peak {m['step_peak_mb']:.0f} MB ({m['method']})")
    print(f"the chapter's {summary['full_run_steps']:,} steps at this speed: "
          f"{summary['full_run_minutes_projected']:.0f} min")
    if "final" in summary:
        print("final:", {k: round(v, 3) for k, v in summary["final"].items()})
    return 0 if summary["loss_falls"] else 1


if __name__ == "__main__":
    sys.exit(main())
