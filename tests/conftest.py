"""Shared fixtures."""
import pytest

from effnet_tutorial import fast


@pytest.fixture(params=[True, False], ids=["fast", "textbook"])
def fast_paths(request):
    """Run a test twice: with the fast kernels (the default) and with the textbook code only."""
    with fast.using(request.param):
        yield request.param
