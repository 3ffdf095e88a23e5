"""The generated proxy task of Part II: deterministic, balanced, well-formed, clear errors."""
from __future__ import annotations

import pytest
import torch

from effnet_tutorial.data import proxy


def test_shapes_dtypes_and_balance():
    split = proxy.make_proxy_dataset(per_class=3, size=24, seed=0)
    n = 3 * len(proxy.CLASS_NAMES)
    assert split.images.shape == (n, 3, 24, 24) and split.images.dtype == torch.uint8
    assert split.labels.shape == (n,) and split.labels.dtype == torch.int64
    assert len(split) == n
    assert torch.bincount(split.labels, minlength=len(proxy.CLASS_NAMES)).tolist() == [3] * len(proxy.CLASS_NAMES)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = proxy.make_proxy_dataset(2, size=16, seed=5)
    b = proxy.make_proxy_dataset(2, size=16, seed=5)
    c = proxy.make_proxy_dataset(2, size=16, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_splits_are_independent_draws():
    train, test = proxy.make_proxy_splits(2, 1, size=16, seed=0)
    assert len(train) == 2 * len(proxy.CLASS_NAMES) and len(test) == len(proxy.CLASS_NAMES)
    assert not any(torch.equal(test.images[0], im) for im in train.images)


def test_images_are_not_constant():
    split = proxy.make_proxy_dataset(1, size=32, seed=0)
    assert all(im.float().std() > 5 for im in split.images)


@pytest.mark.parametrize("kwargs", [dict(per_class=0), dict(per_class=1, size=8)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        proxy.make_proxy_dataset(**kwargs)


def test_bad_label():
    import numpy as np
    with pytest.raises(ValueError, match="label"):
        proxy.render(len(proxy.CLASS_NAMES), 32, np.random.default_rng(0))
