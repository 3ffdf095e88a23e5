"""The training loop of Part II: it learns, it is deterministic on the CPU, it rejects bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from effnet_tutorial import classify
from effnet_tutorial.schedules import warmup_cosine_lr


def _tiny_problem(n: int = 64):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[labels == 1, 0] += 120  # class 1 is redder: learnable in a few steps
    return images, labels


def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


CONFIG = classify.ClassifierConfig(epochs=6, batch_size=16, lr=1e-2, label_smoothing=0.0,
                                   num_threads=1)
CPU = torch.device("cpu")


def test_loss_decreases_and_learns():
    images, labels = _tiny_problem()
    model = _tiny_model()
    history = classify.train_classifier(model, images, labels, 8, CONFIG, device=CPU, log=None)
    assert len(history) == CONFIG.epochs
    assert history[-1]["loss"] < history[0]["loss"]
    assert classify.accuracy(model, images, labels, 8, device=torch.device("cpu")) > 0.9


def test_deterministic_on_cpu():
    images, labels = _tiny_problem()
    outs = []
    for _ in range(2):
        model = _tiny_model()
        classify.train_classifier(model, images, labels, 8, CONFIG, device=CPU, log=None)
        outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_threads_are_restored():
    before = torch.get_num_threads()
    images, labels = _tiny_problem(16)
    classify.train_classifier(_tiny_model(), images, labels, 8, CONFIG, device=CPU, log=None)
    assert torch.get_num_threads() == before


def test_prepare_images_resizes_and_normalises():
    x = classify.prepare_images(torch.full((2, 3, 16, 16), 128, dtype=torch.uint8), 8)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.abs().max() < 0.05
    with pytest.raises(ValueError, match="uint8"):
        classify.prepare_images(torch.zeros(2, 3, 8, 8), 8)


def test_learning_rate_is_the_shared_schedule(monkeypatch):
    """Warm-up from lr / warmup (not zero: the first step counts) to lr, then a cosine to zero."""
    calls = []

    def spy(step, total, warmup, base_lr, warmup_init=0.0, min_lr=0.0):
        value = warmup_cosine_lr(step, total, warmup, base_lr, warmup_init, min_lr)
        calls.append((step, total, warmup, base_lr, warmup_init, min_lr, value))
        return value

    monkeypatch.setattr(classify, "warmup_cosine_lr", spy)
    images, labels = _tiny_problem(64)
    config = classify.ClassifierConfig(epochs=8, batch_size=8, lr=0.01, warmup_fraction=0.05,
                                       label_smoothing=0.0, num_threads=1)
    history = classify.train_classifier(_tiny_model(), images, labels, 8, config, device=CPU,
                                        log=None)
    total, warmup = 64, 3  # 8 epochs of 8 steps; int(0.05 * 64)
    assert [c[0] for c in calls] == list(range(total))
    assert all(c[1:6] == (total, warmup, 0.01, 0.01 / warmup, 0.0) for c in calls)
    lrs = [c[-1] for c in calls]
    assert lrs[0] == 0.01 / warmup and lrs[warmup] == 0.01  # the warm-up ends at the peak
    assert lrs[warmup - 1] < 0.01 and lrs[-1] < 1e-3
    assert [row["lr"] for row in history] == lrs[7::8]  # each epoch logs its last step's


def test_no_weight_decay_on_norms_and_biases(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2))
    seen, adamw = [], torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW",
                        lambda groups, **kw: seen.append(groups) or adamw(groups, **kw))
    images, labels = _tiny_problem(8)
    classify.train_classifier(model, images, labels, 8, CONFIG, device=CPU, log=None)
    (decay, no_decay), = seen
    assert decay["weight_decay"] == CONFIG.weight_decay and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model[0].weight), id(model[3].weight)]
    assert [id(p) for p in no_decay["params"]] == [id(model[0].bias), id(model[1].weight),
                                                   id(model[1].bias), id(model[3].bias)]


def test_bad_input():
    images, labels = _tiny_problem(8)
    with pytest.raises(ValueError, match="as many labels"):
        classify.train_classifier(_tiny_model(), images, labels[:4], 8, CONFIG, log=None)
    with pytest.raises(ValueError, match="int64"):
        classify.train_classifier(_tiny_model(), images, labels.float(), 8, CONFIG, log=None)
    with pytest.raises(ValueError):
        classify.ClassifierConfig(epochs=0)
    with pytest.raises(ValueError):
        classify.ClassifierConfig(lr=0.0)
    with pytest.raises(ValueError):
        classify.ClassifierConfig(num_threads=0)
