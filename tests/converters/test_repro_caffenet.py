"""The converted CaffeNet equals the hand-written, Caffe-faithful `repro` CaffeNet loaded with the same
caffemodel — the two independent implementations agree at every tap the paper uses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from converters import load_caffe
from converters.caffemodel import write_caffemodel
from repro.comparators import build_net


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_converted_caffenet_matches_repro_caffenet(tmp_path, asset, random_weights, assert_close, layout):
    prototxt = asset("caffe/bvlc_reference_caffenet_deploy.prototxt")
    caffemodel = write_caffemodel(tmp_path / "caffenet.caffemodel", random_weights(prototxt, seed=3), prototxt, layout)
    ours = build_net("caffenet", resolution=227, weights=str(caffemodel)).eval()
    converted = load_caffe(prototxt, caffemodel, taps=["conv1", "norm1", "pool5", "fc6", "fc7", "fc8"])
    torch.manual_seed(0)
    images = torch.rand(2, 3, 227, 227)
    x = ours.transform(images)
    with torch.no_grad():
        for tap in ("conv1", "norm1", "pool5", "fc6", "fc7", "fc8"):
            assert_close(ours(x, tap=tap).numpy(), converted(x, tap).numpy().astype(np.float64), f"{layout} {tap}")
