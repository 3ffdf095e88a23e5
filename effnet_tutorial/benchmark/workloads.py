"""What the benchmark runs: the models, their inputs and training steps, and the time rows.

Each reference (timm, torchvision, effdet) is built with the settings our model has, and each
training step does the same work on both sides (see ``benchmarks/README.md`` for the rows).

In the book: the appendix, *Performance and export*.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .timing import Row, Settings, compare


def inference_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """A call of ``model(x)`` under ``torch.inference_mode``, to time."""
    def run():
        with torch.inference_mode():
            return model(x)
    return run


def timm_b0(**kw) -> torch.nn.Module:
    """timm's ``efficientnet_b0`` with the given options (random weights)."""
    import timm

    return timm.create_model("efficientnet_b0", **kw)


def effdet_d0() -> torch.nn.Module:
    """effdet's ``tf_efficientdet_d0`` with random weights (no download)."""
    from effdet import create_model

    return create_model("tf_efficientdet_d0", pretrained_backbone=False)


def det_targets(batch: int, size: int, boxes_per_image: int = 6, seed: int = 0):
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
    from effnet_tutorial.anchors import anchors_for
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


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser both sides of a training row use: SGD, momentum 0.9."""
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)



def classifier_rows(s: Settings) -> list[Row]:
    """EfficientNet-B0 inference against timm and torchvision, training step against timm."""
    import torchvision

    import effnet_tutorial as et
    from effnet_tutorial import fast

    torch.manual_seed(0)
    x = torch.randn(s.cls_batch, 3, s.cls_size, s.cls_size)
    ours = et.create_model("efficientnet_b0").eval()
    timm_m = timm_b0().eval()
    tv = torchvision.models.efficientnet_b0().eval()
    rows = [
        compare("b0 inference", "timm", inference_fn(ours, x), inference_fn(timm_m, x), s),
        compare("b0 inference", "torchvision", inference_fn(ours, x), inference_fn(tv, x), s),
    ]
    # opt-in inference paths, each against our eager model
    fused = fast.fuse_conv_bn(ours)
    rows.append(compare("b0 inference, fused conv+BN", "ours eager", inference_fn(fused, x),
                        inference_fn(ours, x), s, note="opt-in"))
    cl = fast.to_channels_last(et.create_model("efficientnet_b0").eval())
    cl.load_state_dict(ours.state_dict())
    x_cl = x.to(memory_format=torch.channels_last)
    rows.append(compare("b0 inference, channels_last", "ours eager", inference_fn(cl, x_cl),
                        inference_fn(ours, x), s, note="opt-in"))
    fcl = fast.to_channels_last(fast.fuse_conv_bn(ours))
    rows.append(compare("b0 inference, fused + channels_last", "ours eager",
                        inference_fn(fcl, x_cl), inference_fn(ours, x), s, note="opt-in"))
    # fused vs timm: the best opt-in inference path against the reference
    rows.append(compare("b0 inference, fused conv+BN", "timm", inference_fn(fused, x),
                        inference_fn(timm_m, x), s, note="opt-in"))
    del tv, fused, cl, fcl

    # training step, same drop-path rate and dropout in both
    torch.manual_seed(0)
    ours_t = et.create_model("efficientnet_b0", drop_path_rate=0.2).train()
    timm_t = timm_b0(drop_path_rate=0.2, drop_rate=0.2).train()
    y = torch.randint(0, 1000, (s.cls_batch,))
    o_opt, t_opt = sgd(ours_t), sgd(timm_t)
    rows.append(compare("b0 training step", "timm", lambda: cls_train_step(ours_t, o_opt, x, y),
                        lambda: cls_train_step(timm_t, t_opt, x, y), s))
    mem_t = fast.use_memory_efficient_swish(et.create_model("efficientnet_b0", drop_path_rate=0.2))
    mem_t.load_state_dict(ours_t.state_dict())
    m_opt = sgd(mem_t.train())
    rows.append(compare("b0 training step, memory-efficient swish", "ours eager",
                        lambda: cls_train_step(mem_t, m_opt, x, y),
                        lambda: cls_train_step(ours_t, o_opt, x, y), s, note="opt-in"))
    return rows


def effdet_d0_at(size: int) -> torch.nn.Module:
    """effdet's D0 in eval mode whose anchors fit ``size`` (smoke runs use smaller inputs)."""
    from effdet import create_model

    if size == 512:
        return effdet_d0().eval()
    return create_model("tf_efficientdet_d0", pretrained_backbone=False,
                        image_size=(size, size)).eval()


def textbook(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the fast kernels off (``effnet_tutorial.fast.using(False)``)."""
    from effnet_tutorial import fast

    def run():
        with fast.using(False):
            return fn()
    return run


def detector_rows(s: Settings) -> list[Row]:
    """EfficientDet-D0 inference, post-processing alone and the training step (see the parts)."""
    torch.manual_seed(0)
    x = torch.randn(s.det_batch, 3, s.det_size, s.det_size)
    return detector_inference_rows(s, x) + postprocess_rows(s, x) + detector_training_rows(s, x)


def detector_inference_rows(s: Settings, x: torch.Tensor) -> list[Row]:
    """D0 raw outputs and with post-processing against effdet, Lite0, and fused D0 (opt-in)."""
    from effdet.bench import DetBenchPredict

    import effnet_tutorial as et
    from effnet_tutorial import fast
    from effnet_tutorial.anchors import anchors_for
    from effnet_tutorial.postprocess import postprocess_detections

    ours, ref = et.create_model("tf_efficientdet_d0").eval(), effdet_d0_at(s.det_size)
    predict = DetBenchPredict(ref).eval()
    anchors = anchors_for(ours, tuple(x.shape[-2:]))

    def ours_full():
        with torch.inference_mode():
            return postprocess_detections(*ours(x), anchors, ours.num_classes)

    def ref_full():
        with torch.inference_mode():
            return predict(x)

    rows = [
        compare("d0 inference, raw outputs", "effdet", inference_fn(ours, x), inference_fn(ref, x), s),
        compare("d0 inference + post-processing", "effdet DetBenchPredict", ours_full, ref_full, s),
        lite0_row(s),
    ]
    fused = fast.fuse_conv_bn(ours)
    rows.append(compare("d0 inference, fused conv+BN", "ours eager", inference_fn(fused, x),
                        inference_fn(ours, x), s, note="opt-in"))
    return rows


def postprocess_rows(s: Settings, x: torch.Tensor) -> list[Row]:
    """Post-processing alone on fixed head outputs: against effdet, and fast kernels vs textbook.

    A random-weight head puts every class logit within about 1e-5 of the prior bias, so they tie
    everywhere; a trained head's logits spread over several units. These rows add seeded unit
    Gaussian noise to the random head's logits for that spread.
    """
    from effdet.bench import DetBenchPredict, _batch_detection, _post_process

    import effnet_tutorial as et
    from effnet_tutorial.anchors import anchors_for
    from effnet_tutorial.postprocess import postprocess_detections

    ours, ref = et.create_model("tf_efficientdet_d0").eval(), effdet_d0_at(s.det_size)
    anchors, boxes_ref = anchors_for(ours, tuple(x.shape[-2:])), DetBenchPredict(ref).anchors.boxes
    with torch.inference_mode():
        cls_out, box_out = ours(x)
        g = torch.Generator().manual_seed(1)
        cls_out = [c + torch.randn(c.shape, generator=g) for c in cls_out]

    def ref_post():
        with torch.inference_mode():
            c, b, idx, cl = _post_process(cls_out, box_out, ref.config.num_levels, 90, 5000)
            return _batch_detection(x.shape[0], c, b, boxes_ref, idx, cl, None, None, 100, False)

    def ours_post():
        with torch.inference_mode():
            return postprocess_detections(cls_out, box_out, anchors, ours.num_classes)

    return [compare("post-processing alone", "effdet", ours_post, ref_post, s),
            compare("post-processing alone, fast kernels", "ours textbook", ours_post,
                    textbook(ours_post), s, note="default")]


def detector_training_rows(s: Settings, x: torch.Tensor) -> list[Row]:
    """One D0 training step with target assignment and loss: against effdet, and fast kernels
    vs textbook."""
    from effdet.bench import DetBenchTrain

    import effnet_tutorial as et

    torch.manual_seed(0)
    ours = et.create_model("tf_efficientdet_d0").train()
    bench = DetBenchTrain(effdet_d0_at(s.det_size)).train()
    (boxes, labels), target = det_targets(s.det_batch, s.det_size)
    o_opt, r_opt = sgd(ours), sgd(bench)

    def ours_step():
        return our_det_train_step(ours, o_opt, x, boxes, labels)

    return [compare("d0 training step (targets + loss)", "effdet DetBenchTrain", ours_step,
                    lambda: effdet_train_step(bench, r_opt, x, target), s),
            compare("d0 training step, fast kernels", "ours textbook", ours_step,
                    textbook(ours_step), s, note="default")]


def lite0_row(s: Settings) -> Row:
    """EfficientDet-Lite0 inference (plain-sum fusion, ReLU6) against effdet's, at 320 (smoke:
    the detector size of the settings)."""
    from effdet import create_model

    import effnet_tutorial as et

    size = 320 if s.det_size == 512 else s.det_size
    x = torch.randn(s.det_batch, 3, size, size)
    ours = et.create_model("tf_efficientdet_lite0").eval()
    ref = create_model("tf_efficientdet_lite0", pretrained_backbone=False,
                       image_size=(size, size)).eval()
    return compare("lite0 inference, raw outputs", "effdet", inference_fn(ours, x),
                   inference_fn(ref, x), s)


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
        inference_fn(compiled, x)()
    except Exception as err:  # noqa: BLE001 - report any failure as a skipped row
        return Row(name, "ours eager", note=f"skipped: compile failed ({type(err).__name__})")
    took = time.perf_counter() - start
    if took > budget_s:
        return Row(name, "ours eager", note=f"skipped: compiling took {took:.0f} s")
    row = compare(name, "ours eager", inference_fn(compiled, x), inference_fn(ours, x), s,
                  note=f"opt-in, compile took {took:.0f} s")
    return row
