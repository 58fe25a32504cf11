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
