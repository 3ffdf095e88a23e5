"""The training loop of Part II: it learns, it is deterministic on the CPU, it rejects bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from effnet_tutorial import classify


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


CONFIG = classify.ClassifierConfig(epochs=6, batch_size=16, lr=1e-2, label_smoothing=0.0, num_threads=1)


def test_loss_decreases_and_learns():
    images, labels = _tiny_problem()
    model = _tiny_model()
    history = classify.train_classifier(model, images, labels, 8, CONFIG, device=torch.device("cpu"), log=None)
    assert len(history) == CONFIG.epochs
    assert history[-1]["loss"] < history[0]["loss"]
    assert classify.accuracy(model, images, labels, 8, device=torch.device("cpu")) > 0.9


def test_deterministic_on_cpu():
    images, labels = _tiny_problem()
    outs = []
    for _ in range(2):
        model = _tiny_model()
        classify.train_classifier(model, images, labels, 8, CONFIG, device=torch.device("cpu"), log=None)
        outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_threads_are_restored():
    before = torch.get_num_threads()
    images, labels = _tiny_problem(16)
    classify.train_classifier(_tiny_model(), images, labels, 8, CONFIG, device=torch.device("cpu"), log=None)
    assert torch.get_num_threads() == before


def test_prepare_images_resizes_and_normalises():
    x = classify.prepare_images(torch.full((2, 3, 16, 16), 128, dtype=torch.uint8), 8)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.abs().max() < 0.05
    with pytest.raises(ValueError, match="uint8"):
        classify.prepare_images(torch.zeros(2, 3, 8, 8), 8)


def test_cosine_lr_schedule():
    assert classify.cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert classify.cosine_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert classify.cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)


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
