"""Train EfficientDet-D0 from scratch on a CPU for a fixed time: ours against effdet's.

The setting is ``effnet_tutorial.recipes.CPU_SHAPES`` (the run of Part IV's training chapter):
the synthetic shapes dataset written in COCO format, ``efficientdet_d0`` from scratch at a reduced
input size, AdamW with a warm-up and a cosine decay spread over a fixed training time, gradient
clipping, an EMA of the weights, and a COCO evaluation (pycocotools) of the EMA on the held-out
split every few minutes of training time. Evaluation time is not training time, and training time
is each run's own CPU time (one thread each), so other load on the machine slows the wall clock,
not the runs' progress per minute.

Both detectors go through the same :class:`effnet_tutorial.train.Trainer` (same data order,
augmentations, optimiser, schedule, clipping, EMA and time budget); only the network, the target
assignment and the loss differ: ours are the package's, effdet's are effdet's own
``DetBenchTrain`` and, for evaluation, ``DetBenchPredict``. By default both train at the same
time, one CPU thread each, so they share the machine's state evenly::

    python benchmarks/train_d0_cpu.py                    # the full run: 30 min of training each
    python benchmarks/train_d0_cpu.py --seeds 0 1        # two seeds of each, all four side by side
    python benchmarks/train_d0_cpu.py --minutes 2 --eval-every 1 --train-images 200  # a quick look

A seed sets the random initial weights, the data order and the augmentations (the dataset itself
is the recipe's, the same for every seed); both implementations get the same seeds. From-scratch
runs of one recipe end far apart from seed to seed, so ranking the implementations takes several
seeds of each: the summary gives each run and the mean final AP per implementation.

Results go to ``benchmarks/results/train_d0_cpu/``: each run's ``metrics.jsonl`` and
checkpoint (``{impl}_seed{seed}/``), ``summary.json`` (the AP-against-time points and the final
AP of every run, the mean per implementation) and ``ap_vs_time.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "train_d0_cpu"
#: The committed record of a full run, which the training chapter plots (``--record`` updates it).
#: It ships with the package: ``effnet_tutorial.benchmark.load_record("train_d0_cpu")``.
RECORD = HERE.parent / "effnet_tutorial" / "benchmark" / "measured" / "train_d0_cpu.json"


def recipe_from(args: argparse.Namespace):
    from effnet_tutorial.recipes import CPU_SHAPES

    changes = {k: v for k, v in (("minutes", args.minutes), ("eval_every_minutes", args.eval_every),
                                 ("train_images", args.train_images), ("val_images", args.val_images))
               if v is not None}
    return replace(CPU_SHAPES, **changes)


def _effdet_model(num_classes: int, size: int):
    with warnings.catch_warnings():  # effdet scripts parts of itself at import (FutureWarning)
        warnings.simplefilter("ignore")
        from effdet import create_model
    return create_model("efficientdet_d0", bench_task="", num_classes=num_classes, pretrained=False,
                        pretrained_backbone=False, image_size=(size, size))


def effdet_trainer_class():
    """A :class:`Trainer` whose loss is effdet's ``DetBenchTrain`` (targets in yxyx, 1-based)."""
    from effnet_tutorial.train import Trainer

    class EffdetTrainer(Trainer):
        def compute_loss(self, images, targets):
            n = max(1, max(len(t["boxes"]) for t in targets))
            bbox = torch.full((len(targets), n, 4), -1.0)
            cls = torch.full((len(targets), n), -1.0)
            for i, t in enumerate(targets):
                k = len(t["boxes"])
                bbox[i, :k] = t["boxes"][:, [1, 0, 3, 2]]
                cls[i, :k] = t["labels"].float() + 1
            out = self.step_model(images, {"bbox": bbox.to(self.device), "cls": cls.to(self.device)})
            return out["loss"], out["class_loss"], out["box_loss"]

    return EffdetTrainer


def effdet_evaluate(bench_model, dataset, size: int) -> dict:
    """effdet's ``DetBenchPredict`` (its own post-processing) scored by pycocotools."""
    from effdet.bench import DetBenchPredict

    from effnet_tutorial.data.transforms import eval_transforms
    from effnet_tutorial.evaluate import coco_evaluate, to_coco_results

    predict = DetBenchPredict(bench_model.model).eval()
    transform = eval_transforms(size)
    detections, ids = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 8):
            items = [transform(dataset.read_image(i), dataset.target(i))
                     for i in range(start, min(start + 8, len(dataset)))]
            out = predict(torch.stack([im for im, _ in items]))  # (B, 100, 6): xyxy, score, class
            for (_, t), det in zip(items, out):
                h, w = t["orig_size"].tolist()
                boxes = det[:, :4] * t["scale"]
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                detections.append({"boxes": boxes, "scores": det[:, 4], "labels": det[:, 5].long() - 1})
                ids.append(int(t["image_id"]))
    return coco_evaluate(dataset.annotation_file, to_coco_results(detections, ids, dataset.category_ids))


def run_name(impl: str, seed: int) -> str:
    """The folder of one run under the output folder."""
    return f"{impl}_seed{seed}"


def worker(impl: str, recipe, data: Path, out: Path, threads: int, same_init: bool = False) -> None:
    """Train one implementation for the recipe's time budget, evaluating as it goes.

    With ``same_init`` our D0 starts from the weights effdet's D0 is initialised with for this
    seed (copied by :func:`effnet_tutorial.weights.from_effdet`), so that the two runs differ only
    in the code, not in the random draw of the initial weights.
    """
    torch.set_num_threads(threads)
    from effnet_tutorial.data.coco import CocoDetection
    from effnet_tutorial.data.transforms import train_transforms
    from effnet_tutorial.evaluate import evaluate_model
    from effnet_tutorial.factory import create_model
    from effnet_tutorial.train import SeededAugmentation, Trainer

    raw = CocoDetection(data / "images" / "train", data / "annotations" / "instances_train.json")
    val = CocoDetection(data / "images" / "val", data / "annotations" / "instances_val.json")
    size = recipe.image_size
    torch.manual_seed(recipe.seed)
    if impl == "ours":
        model, trainer_class = create_model("efficientdet_d0", num_classes=raw.num_classes, image_size=size), Trainer
        if same_init:
            from effnet_tutorial.weights import from_effdet

            torch.manual_seed(recipe.seed)
            model.load_state_dict(from_effdet(_effdet_model(raw.num_classes, size).state_dict()))
    else:
        from effdet.bench import DetBenchTrain
        model, trainer_class = DetBenchTrain(_effdet_model(raw.num_classes, size)), effdet_trainer_class()
    params = sum(p.numel() for p in model.parameters())
    train_set = SeededAugmentation(raw, train_transforms(size, recipe.jitter), recipe.seed)
    run_dir = out / run_name(impl, recipe.seed)
    if (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()
    trainer = trainer_class(model, train_set, recipe.train_config(progress=False), run_dir)
    trainer.log({"event": "start", "impl": impl, "seed": recipe.seed, "params": params, "threads": threads,
                 "same_init": same_init})

    def on_eval(t) -> dict:
        start = time.perf_counter()
        stats = (evaluate_model(t.eval_model(), val, size) if impl == "ours"
                 else effdet_evaluate(t.eval_model(), val, size))
        row = {k: stats[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")}
        print(f"[{impl} seed {recipe.seed}] {t.train_seconds / 60:5.1f} min, step {t.step}: AP {row['AP']:.3f} "
              f"AP50 {row['AP50']:.3f} (eval {time.perf_counter() - start:.0f} s)", flush=True)
        return row

    trainer.log({"event": "eval", "step": 0, "train_time": 0.0, **on_eval(trainer)})  # untrained, at time 0
    trainer.fit(eval_every_minutes=recipe.eval_every_minutes, on_eval=on_eval)


def read_curve(path: Path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [r for r in records if r.get("event") == "eval"]
    steps = [r for r in records if "loss" in r and r.get("event") is None]
    start = next(r for r in records if r.get("event") == "start")
    return {"impl": start["impl"], "seed": start.get("seed", 0), "same_init": start.get("same_init", False),
            "params": start["params"], "threads": start["threads"],
            "minutes": [r["train_time"] / 60 for r in evals], "AP": [r["AP"] for r in evals],
            "AP50": [r["AP50"] for r in evals], "steps": evals[-1]["step"] if evals else 0,
            "images_per_s": steps[-1]["images_per_s"] if steps else None, "final": evals[-1] if evals else None}


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` where there is one, else what ``platform`` says."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def summarise(out: Path, recipe, impls: list[str], seeds: list[int], wall_s: float) -> dict:
    """Collect every run's curve, the mean final AP per implementation, and plot them."""
    runs = [read_curve(out / run_name(impl, seed) / "metrics.jsonl") for seed in seeds for impl in impls]
    finals = {impl: [r["final"]["AP"] for r in runs if r["impl"] == impl and r["final"]] for impl in impls}
    summary = {"recipe": asdict(recipe), "seeds": seeds, "wall_minutes": wall_s / 60,
               "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "python": platform.python_version()},
               "runs": runs,
               "mean_final_AP": {impl: sum(v) / len(v) if v else None for impl, v in finals.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in runs:  # a colour per implementation, a marker and a line style per seed
        k = seeds.index(r["seed"])
        ax.plot(r["minutes"], r["AP"], marker="osd^v"[k % 5], ls=("-", "--", ":", "-.")[k % 4],
                color="C0" if r["impl"] == "ours" else "C1", label=f"{r['impl']} D0, seed {r['seed']}")
    ax.axhline(0.6, color="grey", ls=":", label="target AP 0.6")
    ax.set(xlabel="training time (min, evaluation excluded)", ylabel="COCO AP@[.5:.95] (val)",
           title=f"D0 from scratch at {recipe.image_size} px on a CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ap_vs_time.png", dpi=110)
    return summary


def drop_options(argv: list[str], flags: tuple[str, ...], valued: tuple[str, ...]) -> list[str]:
    """``argv`` without the given flags and without the given options and their value(s)."""
    kept, skipping = [], False
    for a in argv:
        if a.startswith("--"):
            skipping = a in valued
            if a in flags or skipping:
                continue
        elif skipping:
            continue
        kept.append(a)
    return kept


def run_workers(commands: list[list[str]], threads: int, sequential: bool) -> bool:
    """Run the worker commands side by side (or one after the other), each with ``threads``
    OpenMP threads; True when every one succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if sequential:
        return all(subprocess.run(command, env=env).returncode == 0 for command in commands)
    procs = [subprocess.Popen(command, env=env) for command in commands]
    return all([p.wait() == 0 for p in procs])  # a list: wait for every process


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("both", "ours", "effdet"), default="both")
    parser.add_argument("--minutes", type=float, help="training time per run (default: the recipe's 30)")
    parser.add_argument("--eval-every", type=float, help="minutes of training between evaluations")
    parser.add_argument("--train-images", type=int)
    parser.add_argument("--val-images", type=int)
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="seeds to train each implementation with (default: the recipe's, 0)")
    parser.add_argument("--same-init", action="store_true",
                        help="start our D0 from effdet's initial weights for the seed (see worker())")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--sequential", action="store_true",
                        help="run the two one after the other instead of side by side")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--record", action="store_true",
                        help=f"also copy summary.json to {RECORD.relative_to(HERE.parent)}, the record the book shows")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from effnet_tutorial.recipes import write_shapes_data

    recipe = recipe_from(args)
    seeds = args.seeds if args.seeds else [recipe.seed]
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_shapes_data(args.out / "data", recipe)  # the dataset does not depend on the seed
    if args.worker:  # one run: the parent passes its seed as the only one
        worker(args.impl, replace(recipe, seed=seeds[0]), data, args.out, args.threads, args.same_init)
        return 0
    impls = ["ours", "effdet"] if args.impl == "both" else [args.impl]
    passthrough = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    passthrough = drop_options(passthrough, flags=("--sequential", "--record"), valued=("--impl", "--seeds"))
    start = time.perf_counter()
    commands = [[sys.executable, __file__, "--worker", "--impl", impl, "--seeds", str(seed), *passthrough]
                for seed in seeds for impl in impls]
    if not run_workers(commands, args.threads, args.sequential):
        return 1
    summary = summarise(args.out, recipe, impls, seeds, time.perf_counter() - start)
    print(f"\n{'impl':<8}{'seed':>5}{'params':>12}{'steps':>7}{'img/s':>7}{'AP':>7}{'AP50':>7}   AP at each evaluation")
    for c in summary["runs"]:
        f = c["final"] or {}
        print(f"{c['impl']:<8}{c['seed']:>5}{c['params']:>12,}{c['steps']:>7}{c['images_per_s'] or 0:7.2f}"
              f"{f.get('AP', 0):7.3f}{f.get('AP50', 0):7.3f}   "
              + " ".join(f"{m:.0f}:{a:.2f}" for m, a in zip(c["minutes"], c["AP"])))
    print("mean final AP: " + ", ".join(f"{impl} {ap:.3f}" for impl, ap in summary["mean_final_AP"].items()
                                        if ap is not None))
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'ap_vs_time.png'}")
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text((args.out / "summary.json").read_text())
        print(f"recorded the summary in {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
