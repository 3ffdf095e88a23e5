"""Benchmark effnet_tutorial against timm, torchvision and effdet on this machine.

    python benchmarks/bench.py [--quick] [--out benchmarks/results/bench.json]

Every time row runs both implementations in this one process, on identical inputs, with the same
thread count, alternating them (ours then reference, then reference then ours, ...) after a
warm-up, and reports the median of the repetitions and the ratio ours / reference (below 1.00:
ours is faster). Peak training memory is measured in a fresh subprocess per model (see
``memory_worker``). Writes a JSON file with the machine description and prints a plain table.
See benchmarks/README.md for what each row means.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench.json"


# --------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Sizes and repetitions: the issue's full sizes, or tiny ones for a smoke run."""

    cls_batch: int = 8
    cls_size: int = 224
    det_batch: int = 2
    det_size: int = 512
    repeats: int = 7
    warmup: int = 2
    threads: int = 2
    #: keep alternating past ``repeats`` until the row's pairs took this long (cheap rows get
    #: more pairs, so their medians are as steady as those of the expensive ones) ...
    min_seconds: float = 30.0
    #: ... but never more pairs than this
    max_repeats: int = 41

    @classmethod
    def make(cls, mode: str, threads: int) -> "Settings":
        """``full`` (issue sizes, at least 7 pairs and 30 s per row), ``quick`` (at least 5 pairs
        and 12 s) or ``smoke`` (tiny inputs, 2 pairs)."""
        if mode == "full":
            return cls(threads=threads)
        if mode == "quick":
            return cls(repeats=5, warmup=1, threads=threads, min_seconds=12.0, max_repeats=25)
        if mode == "smoke":
            return cls(cls_batch=2, cls_size=64, det_batch=2, det_size=128, repeats=2, warmup=1,
                       threads=threads, min_seconds=0.0, max_repeats=2)
        raise ValueError(f"unknown mode {mode!r}")


@dataclass
class Row:
    """One line of the table."""

    name: str
    reference: str
    ours_ms: Optional[float] = None
    ref_ms: Optional[float] = None
    ratio: Optional[float] = None
    unit: str = "ms"
    note: str = ""
    ours_runs: list = field(default_factory=list)
    ref_runs: list = field(default_factory=list)
    pair_quartiles: Optional[list] = None  # quartiles of ours_i / ref_i over the pairs


# --------------------------------------------------------------------------- machine
def machine_info(threads: int) -> dict:
    """CPU model, cores, load average, library versions and thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("timm", "torchvision", "effdet", "onnxruntime"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", None) or _dist_version(mod)
        except ImportError:
            versions[mod] = None
    import effnet_tutorial

    versions["effnet_tutorial"] = effnet_tutorial.__version__
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads,
            "load_average": list(os.getloadavg()), "gpu": gpu, "platform": platform.platform(),
            "versions": versions, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _dist_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def choose_threads(threads: Optional[int] = None) -> tuple[int, str]:
    """The torch thread count and why: as given, else all cores (at most 8), else 1 when busy.

    When other jobs already keep every core busy (1-minute load average above the core count),
    several OpenMP threads per process wait on each other at every barrier and each operator
    can run several times slower than on one thread; both sides then get one thread.
    """
    if threads:
        return threads, "--threads"
    cores = os.cpu_count() or 1
    if os.getloadavg()[0] > cores:
        return 1, f"load average {os.getloadavg()[0]:.1f} > {cores} cores"
    return min(cores, 8), "all cores"


# --------------------------------------------------------------------------- timing
def compare(name: str, reference: str, ours: Callable[[], object], ref: Callable[[], object],
            s: Settings, note: str = "") -> Row:
    """Alternate ``ours`` and ``ref`` after ``s.warmup`` runs of each; medians and their ratio.

    At least ``s.repeats`` pairs, more (up to ``s.max_repeats``) until the timed pairs add up
    to ``s.min_seconds``. Besides the ratio of the medians, the row keeps the quartiles of the
    per-pair ratios (each pair ran back to back, so a change of machine speed between pairs
    cancels in its ratio): the spread a reader should allow for.
    """
    for _ in range(s.warmup):
        ours()
        ref()
    t_ours, t_ref = [], []
    i = 0
    while i < s.repeats or (sum(t_ours) + sum(t_ref) < s.min_seconds * 1000 and i < s.max_repeats):
        pair = [(ours, t_ours), (ref, t_ref)]
        for fn, out in (pair if i % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
        i += 1
    a, b = statistics.median(t_ours), statistics.median(t_ref)
    pairs = sorted(x / y for x, y in zip(t_ours, t_ref))
    spread = [_quantile(pairs, 0.25), _quantile(pairs, 0.75)]
    row = Row(name, reference, a, b, a / b, note=note, ours_runs=t_ours, ref_runs=t_ref,
              pair_quartiles=spread)
    print(f"  {name}: ours {a:.1f} ms, {reference} {b:.1f} ms, ratio {a / b:.2f} "
          f"(pairs {len(pairs)}, per-pair ratios {spread[0]:.2f}-{spread[1]:.2f})", flush=True)
    return row


def _quantile(sorted_values: list, q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _inference(model, x):
    def run():
        with torch.inference_mode():
            return model(x)
    return run


# --------------------------------------------------------------------------- models
def _timm_b0(**kw):
    import timm

    return timm.create_model("efficientnet_b0", **kw)


def _effdet_d0():
    from effdet import create_model

    return create_model("tf_efficientdet_d0", pretrained_backbone=False)


def _det_targets(batch: int, size: int, boxes_per_image: int = 6, seed: int = 0):
    """Seeded boxes: ours (list of xyxy, 0-based labels) and effdet's (padded yxyx, 1-based)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, boxes_per_image, 2, generator=g) * size * 0.6
    wh = torch.rand(batch, boxes_per_image, 2, generator=g) * size * 0.35 + 16
    xyxy = torch.cat([xy, (xy + wh).clamp(max=size - 1)], -1)
    labels = torch.randint(0, 90, (batch, boxes_per_image), generator=g)
    ours = ([b for b in xyxy], [lab for lab in labels])
    theirs = {"bbox": xyxy[..., [1, 0, 3, 2]].contiguous(), "cls": (labels + 1).float()}
    return ours, theirs


def our_det_train_step(model, optimizer, images, boxes, labels):
    """One training step as ``Trainer.compute_loss`` chains it: targets, forward, loss, step."""
    from effnet_tutorial.anchors import assign_targets_batch, feature_sizes, targets_by_level
    from effnet_tutorial.inference import anchors_for
    from effnet_tutorial.losses import detection_loss

    size = tuple(images.shape[-2:])
    c = model.config
    cls_t, box_t, num_pos = assign_targets_batch(anchors_for(model, size), boxes, labels)
    cls_l, box_l = targets_by_level(cls_t, box_t, feature_sizes(size, c.min_level, c.max_level))
    cls_out, box_out = model(images)
    total, _, _ = detection_loss(cls_out, box_out, cls_l, box_l, num_pos, model.num_classes)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return total


def effdet_train_step(bench, optimizer, images, target):
    """effdet's training bench: AnchorLabeler, forward, DetectionLoss, then the same step."""
    loss = bench(images, target)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def cls_train_step(model, optimizer, x, y):
    """Classifier step: forward, cross-entropy, backward, SGD step."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


# --------------------------------------------------------------------------- the rows
def classifier_rows(s: Settings) -> list[Row]:
    """EfficientNet-B0 inference against timm and torchvision, training step against timm."""
    import torchvision

    import effnet_tutorial as et
    from effnet_tutorial import fast

    torch.manual_seed(0)
    x = torch.randn(s.cls_batch, 3, s.cls_size, s.cls_size)
    ours = et.create_model("efficientnet_b0").eval()
    timm_m = _timm_b0().eval()
    tv = torchvision.models.efficientnet_b0().eval()
    rows = [
        compare("b0 inference", "timm", _inference(ours, x), _inference(timm_m, x), s),
        compare("b0 inference", "torchvision", _inference(ours, x), _inference(tv, x), s),
    ]
    # opt-in inference paths, each against our eager model
    fused = fast.fuse_conv_bn(ours)
    rows.append(compare("b0 inference, fused conv+BN", "ours eager", _inference(fused, x),
                        _inference(ours, x), s, note="opt-in"))
    cl = fast.to_channels_last(et.create_model("efficientnet_b0").eval())
    cl.load_state_dict(ours.state_dict())
    x_cl = x.to(memory_format=torch.channels_last)
    rows.append(compare("b0 inference, channels_last", "ours eager", _inference(cl, x_cl),
                        _inference(ours, x), s, note="opt-in"))
    fcl = fast.to_channels_last(fast.fuse_conv_bn(ours))
    rows.append(compare("b0 inference, fused + channels_last", "ours eager",
                        _inference(fcl, x_cl), _inference(ours, x), s, note="opt-in"))
    # fused vs timm: the best opt-in inference path against the reference
    rows.append(compare("b0 inference, fused conv+BN", "timm", _inference(fused, x),
                        _inference(timm_m, x), s, note="opt-in"))
    del tv, fused, cl, fcl

    # training step, same drop-path rate and dropout in both
    torch.manual_seed(0)
    ours_t = et.create_model("efficientnet_b0", drop_path_rate=0.2).train()
    timm_t = _timm_b0(drop_path_rate=0.2, drop_rate=0.2).train()
    y = torch.randint(0, 1000, (s.cls_batch,))
    o_opt, t_opt = _sgd(ours_t), _sgd(timm_t)
    rows.append(compare("b0 training step", "timm", lambda: cls_train_step(ours_t, o_opt, x, y),
                        lambda: cls_train_step(timm_t, t_opt, x, y), s))
    mem_t = fast.use_memory_efficient_swish(et.create_model("efficientnet_b0", drop_path_rate=0.2))
    mem_t.load_state_dict(ours_t.state_dict())
    m_opt = _sgd(mem_t.train())
    rows.append(compare("b0 training step, memory-efficient swish", "ours eager",
                        lambda: cls_train_step(mem_t, m_opt, x, y),
                        lambda: cls_train_step(ours_t, o_opt, x, y), s, note="opt-in"))
    return rows


def detector_rows(s: Settings) -> list[Row]:
    """EfficientDet-D0 inference (raw, with post-processing), post-processing alone, training."""
    from effdet.bench import DetBenchPredict, DetBenchTrain, _batch_detection, _post_process

    import effnet_tutorial as et
    from effnet_tutorial import fast
    from effnet_tutorial.inference import anchors_for
    from effnet_tutorial.postprocess import postprocess_detections

    torch.manual_seed(0)
    size = s.det_size
    x = torch.randn(s.det_batch, 3, size, size)
    ours = et.create_model("tf_efficientdet_d0").eval()
    ref = _effdet_d0().eval()
    if size != ref.config.image_size[0]:  # smoke runs: effdet's anchors follow its config size
        from effdet import create_model

        ref = create_model("tf_efficientdet_d0", pretrained_backbone=False,
                           image_size=(size, size)).eval()
    predict = DetBenchPredict(ref).eval()
    anchors = anchors_for(ours, (size, size))

    def ours_post(cls_out, box_out):
        return postprocess_detections(cls_out, box_out, anchors, ours.num_classes)

    def ours_full():
        with torch.inference_mode():
            return ours_post(*ours(x))

    def ref_full():
        with torch.inference_mode():
            return predict(x)

    rows = [
        compare("d0 inference, raw outputs", "effdet", _inference(ours, x), _inference(ref, x), s),
        compare("d0 inference + post-processing", "effdet DetBenchPredict", ours_full, ref_full, s),
    ]
    fused = fast.fuse_conv_bn(ours)
    rows.append(compare("d0 inference, fused conv+BN", "ours eager", _inference(fused, x),
                        _inference(ours, x), s, note="opt-in"))
    del fused

    # post-processing alone, on the same head outputs for both. A random-weight head puts every
    # class logit within about 1e-5 of the prior bias, so they tie everywhere (the D0 +
    # post-processing row above has those); a trained head's logits spread over several units.
    # This row adds seeded unit Gaussian noise to the random head's logits for that spread.
    with torch.inference_mode():
        cls_out, box_out = ours(x)
        g = torch.Generator().manual_seed(1)
        cls_out = [c + torch.randn(c.shape, generator=g) for c in cls_out]
    boxes_ref = predict.anchors.boxes

    def ref_post():
        with torch.inference_mode():
            c, b, idx, cl = _post_process(cls_out, box_out, ref.config.num_levels, 90, 5000)
            return _batch_detection(x.shape[0], c, b, boxes_ref, idx, cl, None, None, 100, False)

    def ours_post_only():
        with torch.inference_mode():
            return ours_post(cls_out, box_out)

    rows.append(compare("post-processing alone", "effdet", ours_post_only, ref_post, s))

    # training step with target assignment and loss
    torch.manual_seed(0)
    ours_t = et.create_model("tf_efficientdet_d0").train()
    bench = DetBenchTrain(_effdet_d0() if size == 512 else ref).train()
    (boxes, labels), target = _det_targets(s.det_batch, size)
    o_opt, r_opt = _sgd(ours_t), _sgd(bench)
    rows.append(compare("d0 training step (targets + loss)", "effdet DetBenchTrain",
                        lambda: our_det_train_step(ours_t, o_opt, x, boxes, labels),
                        lambda: effdet_train_step(bench, r_opt, x, target), s))
    return rows


# --------------------------------------------------------------------------- memory
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
            model = _timm_b0(drop_path_rate=0.2, drop_rate=0.2)
        else:
            model = et.create_model("efficientnet_b0", drop_path_rate=0.2)
        if "swish" in job:
            fast.use_memory_efficient_swish(model)
        model.train()
        opt = _sgd(model)
        step = lambda: cls_train_step(model, opt, x, y)  # noqa: E731
    else:
        size = s.det_size
        x = torch.randn(s.det_batch, 3, size, size)
        (boxes, labels), target = _det_targets(s.det_batch, size)
        if "effdet" in job:
            from effdet import create_model
            from effdet.bench import DetBenchTrain

            kw = {} if size == 512 else {"image_size": (size, size)}
            bench = DetBenchTrain(create_model("tf_efficientdet_d0", pretrained_backbone=False,
                                               **kw)).train()
            opt = _sgd(bench)
            step = lambda: effdet_train_step(bench, opt, x, target)  # noqa: E731
        else:
            from effnet_tutorial.inference import anchors_for

            model = et.create_model("tf_efficientdet_d0")
            if "swish" in job:
                fast.use_memory_efficient_swish(model)
            model.train()
            anchors_for(model, (size, size))  # the anchor cache belongs to the baseline
            opt = _sgd(model)
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


def tensor_peak_mb(step: Callable[[], object]) -> Optional[float]:
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


def _status_mb(field_name: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _current_rss_mb() -> Optional[float]:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> Optional[float]:
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
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", job,
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
    ]


# --------------------------------------------------------------------------- torch.compile
def compile_row(s: Settings, budget_s: float) -> Row:
    """B0 inference compiled vs eager, if compilation finishes within ``budget_s`` seconds."""
    import effnet_tutorial as et
    from effnet_tutorial import fast

    name = "b0 inference, torch.compile"
    x = torch.randn(s.cls_batch, 3, s.cls_size, s.cls_size)
    ours = et.create_model("efficientnet_b0").eval()
    start = time.perf_counter()
    try:
        compiled = fast.maybe_compile(fast.fuse_conv_bn(ours))
        _inference(compiled, x)()
    except Exception as err:  # noqa: BLE001 - report any failure as a skipped row
        return Row(name, "ours eager", note=f"skipped: compile failed ({type(err).__name__})")
    took = time.perf_counter() - start
    if took > budget_s:
        return Row(name, "ours eager", note=f"skipped: compiling took {took:.0f} s")
    row = compare(name, "ours eager", _inference(compiled, x), _inference(ours, x), s,
                  note=f"opt-in, compile took {took:.0f} s")
    return row


# --------------------------------------------------------------------------- output
def format_table(rows: list[Row]) -> str:
    """A plain-text table: row, reference, ours, reference, ratio, pairs and the per-pair
    ratios' quartiles (time rows), note."""
    head = (f"{'row':<50} {'reference':<22} {'ours':>10} {'ref':>10} {'ratio':>6} "
            f"{'pairs':>5} {'per pair':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.ratio is None and r.ours_ms is not None:
            lines.append(f"{r.name:<50} {r.reference:<22} {r.ours_ms:>7.1f} {r.unit:<2} "
                         f"{r.ref_ms:>7.1f} {r.unit:<2} {'-':>6} {'':>15}  {r.note}")
            continue
        if r.ratio is None:
            lines.append(f"{r.name:<50} {r.reference:<22} {'-':>10} {'-':>10} {'-':>6} {'':>15}  "
                         f"{r.note}")
            continue
        u = r.unit
        q = r.pair_quartiles
        pairs = f"{len(r.ours_runs):>5} {q[0]:>4.2f}-{q[1]:<4.2f}" if q else f"{'':>15}"
        lines.append(f"{r.name:<50} {r.reference:<22} {r.ours_ms:>7.1f} {u:<2} {r.ref_ms:>7.1f} "
                     f"{u:<2} {r.ratio:>6.2f} {pairs}  {r.note}")
    return "\n".join(lines)


def run(mode: str = "full", threads: Optional[int] = None, out: Optional[Path] = DEFAULT_OUT,
        memory: bool = True, compile: bool = False, compile_budget_s: float = 300.0,
        only: Optional[str] = None) -> dict:
    """Run the benchmark; returns (and writes, unless ``out`` is None) the results dict."""
    threads, why = choose_threads(threads)
    torch.set_num_threads(threads)
    s = Settings.make(mode, threads)
    info = machine_info(threads)
    info["threads_reason"] = why
    print(f"{info['cpu']} | {info['cores']} cores | torch threads {threads} ({why}) | load average "
          f"{info['load_average'][0]:.2f} | mode {mode}", flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    if only in (None, "classifier"):
        rows += classifier_rows(s)
    if only in (None, "detector"):
        rows += detector_rows(s)
    if memory and only in (None, "memory"):
        rows += memory_rows(mode, threads, samples=3 if mode == "full" else 1)
    if only in (None, "compile"):
        rows.append(compile_row(s, compile_budget_s) if compile else Row(
            "b0 inference, torch.compile", "ours eager",
            note="skipped: not run by default (pass --compile)"))
    info["load_average_end"] = list(os.getloadavg())
    info["seconds"] = time.perf_counter() - start
    result = {"machine": info, "settings": asdict(s), "mode": mode,
              "rows": [asdict(r) for r in rows]}
    print()
    print(format_table(rows))
    print(f"\n{info['seconds']:.0f} s; load average at the end {info['load_average_end'][0]:.2f}")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {os.path.relpath(out)}")
    return result


def main(argv: Optional[list[str]] = None) -> None:  # noqa: D103
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 repetitions instead of 7")
    p.add_argument("--mode", choices=["full", "quick", "smoke"], default=None,
                   help="smoke: tiny inputs, for CI (the book under BOOK_SMOKE=1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores, at most 8; 1 if the load average exceeds the cores)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    p.add_argument("--only", choices=["classifier", "detector", "memory", "compile"], default=None)
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    mode = a.mode or ("quick" if a.quick else "full")
    if a.memory_worker:
        s = Settings.make(mode, a.threads or 1)
        print(json.dumps(memory_worker(a.memory_worker, s)))
        return
    run(mode, a.threads, a.out, memory=not a.no_memory, compile=a.compile, only=a.only)


if __name__ == "__main__":
    main()
