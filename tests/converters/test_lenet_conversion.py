"""A real trained caffemodel (MNIST LeNet) converted and checked against OpenCV's Caffe importer."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

import converters
from converters.caffe2onnx import convert_caffe
from converters.caffe_proto import parse_binary
from converters.caffemodel import net_parameter, read_weights, write_caffemodel
from converters.verify import compare_caffe

LENET_TAPS = ["conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]


def drawn_digits(scale: float = 0.8) -> np.ndarray:
    """(10, 1, 28, 28) digits 0–9 in [0, 1], white on black and centred as in MNIST, drawn with OpenCV."""
    images = []
    for digit in range(10):
        image = np.zeros((28, 28), np.uint8)
        (w, h), _ = cv2.getTextSize(str(digit), cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        cv2.putText(image, str(digit), ((28 - w) // 2, (28 + h) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 2, cv2.LINE_AA)
        images.append(image)
    return (np.stack(images)[:, None] / 255.0).astype(np.float32)


def random_strokes(n: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) seeded random thick pen strokes in [0, 1]: MNIST-like but not digits."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
        for _ in range(rng.integers(1, 4)):
            p, q = rng.integers(4, 24, size=2), rng.integers(4, 24, size=2)
            cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 255, int(rng.integers(2, 4)), cv2.LINE_AA)
    return (images[:, None] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def lenet(asset):
    return asset("lenet/lenet.prototxt"), asset("lenet/lenet_iter_10000.caffemodel")


def test_lenet_equals_opencv_and_onnxruntime_at_every_tap(lenet):
    prototxt, caffemodel = lenet
    x = np.concatenate([drawn_digits(), random_strokes(6, seed=1)])
    reports = compare_caffe(prototxt, caffemodel, x)
    assert [r.tap for r in reports] == LENET_TAPS
    for r in reports:
        assert r.ref_max_abs > 0, r.tap
        assert r.rel_torch_ref <= 1e-4, f"{r.tap}: torch vs OpenCV {r.rel_torch_ref:.2e}"
        assert r.rel_ort_ref <= 1e-4, f"{r.tap}: onnxruntime vs OpenCV {r.rel_ort_ref:.2e}"
        assert r.rel_torch_ort <= 1e-4, f"{r.tap}: torch vs onnxruntime {r.rel_torch_ort:.2e}"


def test_lenet_reads_drawn_digits(lenet):
    """The converted weights are the trained ones: LeNet names digits it has never seen."""
    net = converters.load_caffe(*lenet)
    with torch.no_grad():
        predicted = net(torch.from_numpy(drawn_digits()), "prob").argmax(1)
    assert (predicted == torch.arange(10)).sum() >= 8, predicted.tolist()


def test_in_place_relu_names_the_blob_after_it(lenet):
    """Caffe's relu1 overwrites ip1: tap `ip1` is rectified; the pre-ReLU value is `ip1@ip1`."""
    conversion = convert_caffe(*lenet)
    x = random_strokes(4, seed=2)
    model = conversion.model
    model.graph.output.add(name="ip1@ip1")
    session = ort.InferenceSession(model.SerializeToString())
    after, before = session.run(["ip1", "ip1@ip1"], {"data": x})
    assert (after >= 0).all() and (before < 0).any()
    np.testing.assert_array_equal(after, np.maximum(before, 0))


def test_forward_stops_at_the_tap(lenet):
    net = converters.load_caffe(*lenet)
    called = []
    for name, module in net.graph.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
    x = torch.from_numpy(random_strokes(2, seed=3))
    with torch.no_grad():
        pool1 = net(x, "pool1")
    assert called == ["conv1", "pool1"] and pool1.shape == (2, 20, 12, 12)
    called.clear()
    with torch.no_grad():
        feats = net.features(x, ["conv2", "pool1"])
    assert called == ["conv1", "pool1", "conv2"] and set(feats) == {"conv2", "pool1"}
    with pytest.raises(ValueError, match="unknown tap 'fc6'"):
        net(x, "fc6")


def test_taps_subset_drops_later_weights_and_state_dict_round_trips(lenet, tmp_path):
    net = converters.load_caffe(*lenet, taps=["pool2"])
    assert net.taps == ("pool2",)
    assert not any("ip" in key for key in net.state_dict()), "weights past the deepest tap were kept"
    full = converters.load_caffe(*lenet)
    torch.save(full.state_dict(), tmp_path / "model.pt")
    again = converters.load_caffe(*lenet)
    for p in again.parameters():
        torch.nn.init.zeros_(p)
    again.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    x = torch.from_numpy(random_strokes(2, seed=4))
    with torch.no_grad():
        torch.testing.assert_close(again(x, "prob"), full(x, "prob"), rtol=0, atol=0)
        torch.testing.assert_close(copy.deepcopy(full)(x, "prob"), full(x, "prob"), rtol=0, atol=0)
        # moving the module rebuilds the truncated graphs on the moved weights
        assert full.double()(x.double(), "ip2").dtype == torch.float64


def test_v1_prototxt_and_v1_caffemodel_give_the_same_network(lenet, tmp_path):
    """Legacy layouts: `layers { type: CONVOLUTION }` and blobs with num/channels/height/width."""
    prototxt, caffemodel = lenet
    weights = read_weights(caffemodel)
    v1_prototxt = tmp_path / "lenet_v1.prototxt"
    v1_prototxt.write_text(text_format.MessageToString(net_parameter(prototxt, {}, layout="v1")))
    assert "layers {" in v1_prototxt.read_text() and "type: CONVOLUTION" in v1_prototxt.read_text()
    v1_model = write_caffemodel(tmp_path / "lenet_v1.caffemodel", weights, prototxt, layout="v1")
    stored = parse_binary(v1_model)
    assert stored.layers and not stored.layer
    assert not stored.layers[-2].blobs[0].HasField("shape") and stored.layers[-2].blobs[0].height == 10  # ip2 (1,1,10,500)
    x = np.concatenate([drawn_digits(), random_strokes(2, seed=5)])
    reference = compare_caffe(prototxt, caffemodel, x)
    for proto, model in [(v1_prototxt, v1_model), (prototxt, v1_model), (v1_prototxt, caffemodel)]:
        for ours, ref in zip(compare_caffe(proto, model, x), reference):
            assert ours.rel_torch_ref <= 1e-4 and ours.rel_ort_ref <= 1e-4, (proto.name, model.name, ours.tap)
            assert ours.ref_max_abs == pytest.approx(ref.ref_max_abs, rel=1e-5), "a different network was read"
