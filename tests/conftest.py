"""Shared fixtures: real assets from ../shared/assets, small and fast."""
from __future__ import annotations

import pytest
import torch

from repro.assets import AssetError, assets_root

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def assets():
    try:
        return assets_root()
    except AssetError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def pretrained_alexnet():
    from repro.nets.caffenet import AlexNetTV

    return AlexNetTV.pretrained(224).eval()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small nets: the 2 cores are shared with other jobs, and a second
    thread spinning against them costs more than it buys (4–6× slower under load). Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
