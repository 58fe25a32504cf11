"""ONNX → torch on a file in the ONNX model zoo's CaffeNet style (Caffe2 export, opset 8, IR 3).

The zoo files cannot be fetched here; this one is written with onnx.helper with the same quirks:
input `data_0` 1×3×224×224, `conv1_w_0`-style weights also listed as graph inputs, MaxPool pads
[0,0,1,1] emulating Caffe's ceil pooling, Gemm-7 (onnx2torch needs ≥ 9: the opset is upgraded),
Dropout-7 with a mask output, a Reshape hard-coding `[1, 9216]` before fc6, Softmax `prob_1`.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import converters
from converters.errors import ConversionError
from converters.torch_convert import unsupported_nodes
from converters.verify import compare_onnx


def zoo_caffenet(path, opset: int = 8, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, weights = [], {}

    def param(name: str, shape: tuple[int, ...], fan_in: int | None = None) -> str:
        std = np.sqrt(2.0 / fan_in) if fan_in else 0.1
        weights[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        return name

    def conv(i: int, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, group: int = 1) -> str:
        w = param(f"conv{i}_w_0", (cout, cin // group, k, k), cin // group * k * k)
        b = param(f"conv{i}_b_0", (cout,))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}_1"], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[pad] * 4, group=group, dilations=[1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}_1"], [f"conv{i}_2"]))
        return f"conv{i}_2"

    def pool(name: str, x: str) -> str:
        nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]))
        return name

    def lrn(name: str, x: str) -> str:
        nodes.append(helper.make_node("LRN", [x], [name], size=5, alpha=1e-4, beta=0.75, bias=1.0))
        return name

    def fc(i: int, x: str, cin: int, cout: int, relu_dropout: bool) -> str:
        w, b = param(f"fc{i}_w_0", (cout, cin), cin), param(f"fc{i}_b_0", (cout,))
        nodes.append(helper.make_node("Gemm", [x, w, b], [f"fc{i}_1"], transB=1))
        if not relu_dropout:
            return f"fc{i}_1"
        nodes.append(helper.make_node("Relu", [f"fc{i}_1"], [f"fc{i}_2"]))
        nodes.append(helper.make_node("Dropout", [f"fc{i}_2"], [f"fc{i}_3", f"_fc{i}_mask_1"], ratio=0.5))
        return f"fc{i}_3"

    x = lrn("norm1_1", pool("pool1_1", conv(1, "data_0", 3, 96, 11, stride=4)))
    x = lrn("norm2_1", pool("pool2_1", conv(2, x, 96, 256, 5, pad=2, group=2)))
    x = conv(5, conv(4, conv(3, x, 256, 384, 3, pad=1), 384, 384, 3, pad=1, group=2), 384, 256, 3, pad=1, group=2)
    x = pool("pool5_1", x)
    weights["OC2_DUMMY_1"] = np.array([1, 9216], np.int64)
    nodes.append(helper.make_node("Reshape", [x, "OC2_DUMMY_1"], ["OC2_DUMMY_0"]))
    x = fc(8, fc(7, fc(6, "OC2_DUMMY_0", 9216, 4096, True), 4096, 4096, True), 4096, 1000, False)
    nodes.append(helper.make_node("Softmax", [x], ["prob_1"]))
    initializers = [numpy_helper.from_array(a, n) for n, a in weights.items()]
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 224, 224])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]  # IR 3 style
    graph = helper.make_graph(nodes, "bvlc_reference_caffenet", inputs,
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, 1000])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3, producer_name="onnx-caffe2")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "bvlc_reference_caffenet.onnx"
    return path, zoo_caffenet(path)


def test_zoo_file_needs_the_preparation(zoo_file):
    """Without the opset upgrade onnx2torch has no Gemm-7 (and Dropout-7) converter."""
    _, model = zoo_file
    assert {"Gemm-7", "Dropout-7"} <= set(unsupported_nodes(model))


@pytest.mark.slow
def test_zoo_caffenet_matches_onnxruntime_with_a_dynamic_batch(zoo_file):
    path, model = zoo_file
    taps = ["conv1_2", "pool1_1", "norm2_1", "pool5_1", "fc6_2", "fc7_3", "fc8_1", "prob_1"]
    net = converters.load_onnx(path, taps=taps)
    assert net.input_name == "data_0" and net.input_shape == (None, 3, 224, 224)
    assert net.shapes["pool1_1"] == (None, 96, 27, 27), "MaxPool pads [0,0,1,1] reproduce Caffe's ceil pooling"
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32) * 50
    # reference: onnxruntime on the untouched file, one sample at a time (its batch is fixed at 1)
    reports = compare_onnx(model, x, net=net, source=str(path))
    assert [r.tap for r in reports] == taps
    for r in reports:
        assert r.ref_max_abs > 0, r.tap
        assert r.rel_torch_ort <= 1e-4, f"{r.tap}: torch (batch 2) vs onnxruntime (original file) {r.rel_torch_ort:.2e}"
    with torch.no_grad():
        fc6 = net(torch.from_numpy(x), "fc6_2")
    assert fc6.shape == (2, 4096) and (fc6 >= 0).all()
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules()), "Dropout must be gone"


def test_load_onnx_reports_unknown_taps_and_bad_files(zoo_file, tmp_path):
    path, _ = zoo_file
    with pytest.raises(ConversionError, match="has no blob.*'conv9_1'.*conv1_1"):
        converters.load_onnx(path, taps=["conv9_1"])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ConversionError, match="broken.onnx"):
        converters.load_onnx(broken)
