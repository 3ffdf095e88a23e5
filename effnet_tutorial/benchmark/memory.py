"""Peak training memory: a fresh process per model, and an exact tensor-memory replay.

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable

import torch

from .timing import Row, Settings
from .workloads import (cls_train_step, det_targets, effdet_train_step, our_det_train_step, sgd,
                        timm_b0)


MEMORY_JOBS = {
    # name: (what, reference it is compared with)
    "b0 ours": "b0", "b0 timm": "b0", "b0 ours + memory-efficient swish": "b0",
    "d0 ours": "d0", "d0 effdet": "d0", "d0 ours + memory-efficient swish": "d0",
}


def memory_worker(job: str, s: Settings) -> dict:
    """Peak resident memory of one training step, in this (fresh) process.

    The baseline is the resident memory once the model, optimiser and batch exist; the peak is
    the resident-memory high-water mark after one full training step; the difference is what
    the step added at its peak: activations saved for backward, gradients, optimiser state and
    the allocator's temporaries. On Linux the high-water mark (``VmHWM``, the same quantity as
    ``ru_maxrss``) is reset after the baseline (``/proc/self/clear_refs``), so that a transient
    peak while building the model cannot hide a smaller step; elsewhere the plain ``ru_maxrss``
    difference is used. A fresh process per model keeps one model's peak from hiding another's.
    """
    import effnet_tutorial as et
    from effnet_tutorial import fast

    torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    if job.startswith("b0"):
        x = torch.randn(s.cls_batch, 3, s.cls_size, s.cls_size)
        y = torch.randint(0, 1000, (s.cls_batch,))
        if "timm" in job:
            model = timm_b0(drop_path_rate=0.2, drop_rate=0.2)
        else:
            model = et.create_model("efficientnet_b0", drop_path_rate=0.2)
        if "swish" in job:
            fast.use_memory_efficient_swish(model)
        model.train()
        opt = sgd(model)
        step = lambda: cls_train_step(model, opt, x, y)  # noqa: E731
    else:
        size = s.det_size
        x = torch.randn(s.det_batch, 3, size, size)
        (boxes, labels), target = det_targets(s.det_batch, size)
        if "effdet" in job:
            from effdet import create_model
            from effdet.bench import DetBenchTrain

            kw = {} if size == 512 else {"image_size": (size, size)}
            bench = DetBenchTrain(create_model("tf_efficientdet_d0", pretrained_backbone=False,
                                               **kw)).train()
            opt = sgd(bench)
            step = lambda: effdet_train_step(bench, opt, x, target)  # noqa: E731
        else:
            from effnet_tutorial.anchors import anchors_for

            model = et.create_model("tf_efficientdet_d0")
            if "swish" in job:
                fast.use_memory_efficient_swish(model)
            model.train()
            anchors_for(model, (size, size))  # the anchor cache belongs to the baseline
            opt = sgd(model)
            step = lambda: our_det_train_step(model, opt, x, boxes, labels)  # noqa: E731
    gc.collect()
    base, method = _current_rss_mb(), "VmHWM reset"
    if base is None or not _reset_peak_rss():  # no /proc: the plain ru_maxrss difference
        base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss"
    step()
    peak = _peak_rss_mb() if method == "VmHWM reset" else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"job": job, "baseline_mb": base, "peak_mb": peak, "step_mb": peak - base,
            "method": method, "tensor_peak_mb": tensor_peak_mb(step)}


def tensor_peak_mb(step: Callable[[], object]) -> float | None:
    """Peak of the tensor bytes that one call of ``step`` holds at once beyond what existed before.

    Replays the allocations and frees that ``torch.profiler`` records (``profile_memory=True``)
    in time order and returns the highest running total, in MB. Unlike the resident-memory peak
    it does not depend on how the C allocator reuses, fragments or returns memory, so it is the
    same in every run of the same step: the row that can tell a real difference of a percent
    from allocator noise. Called on the second step of the worker (gradients and momentum
    buffers exist), after the resident-memory measurement. ``None`` if this torch's profiler
    does not expose its memory events.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = prof.profiler.kineto_results.events()
        changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    except AttributeError:
        return None
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def _status_mb(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _current_rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float | None:
    return _status_mb("VmHWM")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark (Linux >= 4.0: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_rows(mode: str, threads: int, samples: int = 1) -> list[Row]:
    """Run every memory job in fresh subprocesses (median of ``samples``); ours vs reference.

    The allocator makes one process's peak vary by a few percent from run to run, so the full
    benchmark takes the median of three processes per job, interleaving the jobs.
    """
    runs: dict[str, list] = {job: [] for job in MEMORY_JOBS}
    for _ in range(samples):
        for job in MEMORY_JOBS:
            cmd = [sys.executable, "-m", "effnet_tutorial.benchmark", "--memory-worker", job,
                   "--mode", mode, "--threads", str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[job].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {}
    for job, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["step_mb"])
        results[job] = dict(rs[len(rs) // 2], samples=[r["step_mb"] for r in rs])
        tensors = results[job].get("tensor_peak_mb")
        print(f"  memory {job}: +{results[job]['step_mb']:.0f} MB (runs: "
              f"{', '.join(f'{v:.0f}' for v in results[job]['samples'])}), tensors "
              f"{'-' if tensors is None else f'{tensors:.0f}'} MB", flush=True)

    def row(name, a, b, reference, note="", key="step_mb"):
        x, y = results[a].get(key), results[b].get(key)
        if x is None or y is None:
            return Row(name, reference, unit="MB", note="skipped: no profiler memory events")
        return Row(name, reference, x, y, x / y if y > 0 else None, unit="MB", note=note)

    return [
        row("b0 training peak memory", "b0 ours", "b0 timm", "timm"),
        row("d0 training peak memory", "d0 ours", "d0 effdet", "effdet DetBenchTrain"),
        row("b0 training peak tensor memory", "b0 ours", "b0 timm", "timm",
            note="profiler, exact", key="tensor_peak_mb"),
        row("d0 training peak tensor memory", "d0 ours", "d0 effdet", "effdet DetBenchTrain",
            note="profiler, exact", key="tensor_peak_mb"),
        row("b0 training peak memory, memory-efficient swish", "b0 ours + memory-efficient swish",
            "b0 ours", "ours eager", "opt-in"),
        row("d0 training peak memory, memory-efficient swish", "d0 ours + memory-efficient swish",
            "d0 ours", "ours eager", "opt-in"),
        row("b0 training peak tensor memory, memory-efficient swish",
            "b0 ours + memory-efficient swish", "b0 ours", "ours eager", "opt-in; profiler, exact",
            key="tensor_peak_mb"),
        row("d0 training peak tensor memory, memory-efficient swish",
            "d0 ours + memory-efficient swish", "d0 ours", "ours eager", "opt-in; profiler, exact",
            key="tensor_peak_mb"),
    ]


def state_mb(trainer) -> float:
    """Memory a trainer holds between steps, in MB: weights, their gradients, the optimiser's
    per-weight state (AdamW: two moments; SGD: one momentum buffer) and the EMA copy."""
    tensors = [p for p in trainer.model.parameters()]
    tensors += [p.grad for p in trainer.model.parameters() if p.grad is not None]
    tensors += [t for state in trainer.optimizer.state.values() for t in state.values()
                if torch.is_tensor(t)]
    if trainer.ema is not None:
        tensors += list(trainer.ema.module.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def training_step_memory(trainer, images: torch.Tensor, targets) -> dict:
    """Memory of one real training step of ``trainer`` (the book's ``Trainer``), in MB.

    One step runs first, so that gradients and optimiser state exist; the second is measured.
    ``state_mb`` is what the trainer holds between steps (:func:`state_mb`); ``step_peak_mb``
    is the most the step adds on top: on CUDA the allocator's peak
    (``torch.cuda.max_memory_allocated``) above what was allocated before the step, on a CPU the
    exact tensor peak replayed from the profiler (:func:`tensor_peak_mb`). On a CPU the step runs
    in float32; a CUDA step in mixed precision keeps most activations in float16 and needs less.
    """
    trainer.train_step(images, targets)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        trainer.train_step(images, targets)
        torch.cuda.synchronize()
        step_peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        method = "torch.cuda.max_memory_allocated"
    else:
        step_peak = tensor_peak_mb(lambda: trainer.train_step(images, targets))
        method = "profiler tensor replay (float32)"
    state = state_mb(trainer)
    return {"state_mb": state, "step_peak_mb": step_peak,
            "total_mb": None if step_peak is None else state + step_peak, "method": method}
