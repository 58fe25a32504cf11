"""The exact original prototxts (CaffeNet, AlexNet, VideoNet) with seeded random weights written as
real caffemodels in both layouts, converted and checked at every tap against OpenCV and onnxruntime.

Their trained weights are not obtainable here; random He-scaled weights exercise the same
architecture and the same files, and input at the scale of mean-subtracted 0–255 pixels keeps LRN
in its non-linear range.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import converters
from converters.caffe_proto import parse_binary
from converters.caffemodel import read_weights, write_caffemodel
from converters.verify import compare_caffe

ARCHITECTURES = {
    "caffenet": ("caffe/bvlc_reference_caffenet_deploy.prototxt",
                 ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8", "prob"]),
    "alexnet": ("caffe/bvlc_alexnet_deploy.prototxt",
                ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8", "prob"]),
    "videonet": ("videonet/unsup_net_deploy.prototxt",
                 ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7"]),
}


@pytest.fixture(scope="module")
def weights_for(asset, random_weights):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            prototxt = asset(ARCHITECTURES[name][0])
            cache[name] = (prototxt, random_weights(prototxt, seed=0))
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_original_architecture_matches_opencv_at_every_tap(name, layout, weights_for, tmp_path):
    prototxt, weights = weights_for(name)
    caffemodel = write_caffemodel(tmp_path / f"{name}_{layout}.caffemodel", weights, prototxt, layout=layout)
    stored = parse_binary(caffemodel)
    assert bool(stored.layers) == (layout == "v1") and bool(stored.layer) == (layout == "v2")
    x = np.random.default_rng(1).standard_normal((2, 3, 227, 227)).astype(np.float32) * 50
    reports = compare_caffe(prototxt, caffemodel, x)
    assert [r.tap for r in reports] == ARCHITECTURES[name][1]
    for r in reports:
        assert r.ref_max_abs > 1e-3, f"{r.tap} vanished; the comparison would prove nothing"
        assert r.rel_torch_ref <= 1e-4, f"{name}/{layout} {r.tap}: torch vs OpenCV {r.rel_torch_ref:.2e}"
        assert r.rel_ort_ref <= 1e-4, f"{name}/{layout} {r.tap}: onnxruntime vs OpenCV {r.rel_ort_ref:.2e}"
        assert r.rel_torch_ort <= 1e-4, f"{name}/{layout} {r.tap}: torch vs onnxruntime {r.rel_torch_ort:.2e}"
    shapes = {r.tap: r.shape[1:] for r in reports}
    assert shapes["pool5"] == (256, 6, 6)


@pytest.mark.slow
def test_caffe_blobs_are_the_written_weights_in_caffe_layout(weights_for, tmp_path):
    """`converters.caffe_blobs` gives back each layer's arrays exactly, also from legacy 4-D V1 blobs
    (fc weights stored 1×1×out×in), ready for a hand-written CaffeNet."""
    prototxt, weights = weights_for("caffenet")
    caffemodel = write_caffemodel(tmp_path / "v1.caffemodel", weights, prototxt, layout="v1")
    assert read_weights(caffemodel)["fc6"][0].shape == (1, 1, 4096, 9216)
    blobs = converters.caffe_blobs(prototxt, caffemodel)
    assert list(blobs) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    for layer, arrays in weights.items():
        assert [a.shape for a in blobs[layer]] == [a.shape for a in arrays], layer
        for ours, written in zip(blobs[layer], arrays):
            np.testing.assert_array_equal(ours, written)
    assert blobs["conv2"][0].shape == (256, 48, 5, 5), "group 2: each filter sees half the channels"


def test_caffenet_at_224_uses_caffe_ceil_pooling(weights_for):
    """At 224 Caffe's pool1 gives 27 where floor pooling gives 26; pool5 stays 6×6 (fc6 fits)."""
    prototxt, weights = weights_for("caffenet")
    from converters.caffe2onnx import caffe_to_onnx
    from converters.caffe_net import read_net
    from converters.torch_convert import load_onnx_model

    conversion = caffe_to_onnx(read_net(prototxt, {"data": (1, 3, 224, 224)}), weights)
    assert conversion.shapes["pool1"] == (None, 96, 27, 27) and conversion.shapes["pool5"] == (None, 256, 6, 6)
    net = load_onnx_model(conversion.model, taps=["pool1"])
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224), "pool1").shape == (1, 96, 27, 27)
