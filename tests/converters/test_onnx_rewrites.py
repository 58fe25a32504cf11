"""Model-zoo style classifier graphs that onnx2torch cannot take as they are (`converters.onnx_rewrites`): each is
rewritten into supported ops and the torch module matches onnxruntime running the untouched graph.

The zoo files cannot be fetched here; the graphs are written with onnx.helper with the zoo's quirks (Caffe2
exports: IR 3 with weights listed as inputs, fixed batch 1, old opsets, asymmetric pads emulating Caffe's ceil
pooling, Reshapes hard-coding batch 1; TF-style exports: auto_pad SAME, ImageScaler preprocessing).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import converters
import converters.torch_convert as torch_convert
from converters.errors import ConversionError
from converters.torch_convert import load_onnx_model
from converters.verify import compare_onnx

pytestmark = pytest.mark.usefixtures("one_thread")


class Graph:
    """A small ONNX graph builder in the zoo's style."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: dict[str, np.ndarray] = {}

    def param(self, name: str, shape: tuple[int, ...], std: float) -> str:
        self.weights[name] = (self.rng.standard_normal(shape) * std).astype(np.float32)
        return name

    def op(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, **attrs) -> str:
        w = self.param(f"{name}_w", (cout, cin // attrs.get("group", 1), k, k), np.sqrt(2.0 / (cin * k * k)))
        b = self.param(f"{name}_b", (cout,), 0.1)
        return self.op("Relu", [self.op("Conv", [x, w, b], name, kernel_shape=[k, k], **attrs)], f"{name}_relu")

    def model(self, output: str, in_shape: tuple[int, ...], opset: int, ir: int = 3,
              ints: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
        tensors = [numpy_helper.from_array(a, n) for n, a in {**self.weights, **(ints or {})}.items()]
        inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, list(in_shape))]
        if ir < 4:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in tensors]
        graph = helper.make_graph(self.nodes, "zoo", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                                  initializer=tensors)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
        del model.graph.output[:]  # typed by shape inference below (the zoo files state their output shapes)
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.output.extend(v for v in inferred.graph.value_info if v.name == output)
        onnx.checker.check_model(model)
        return model


def single_op(op: str, opset: int, in_shape=(1, 8, 10, 10), **attrs) -> onnx.ModelProto:
    g = Graph()
    inputs = ["data_0"]
    if op == "Conv":
        inputs.append(g.param("w", (6, in_shape[1], 3, 3), 0.2))
        attrs.setdefault("kernel_shape", [3, 3])
    if op in ("AveragePool", "MaxPool"):
        attrs.setdefault("kernel_shape", [3, 3])
    g.op(op, inputs, "y", **attrs)
    return g.model("y", in_shape, opset)


CASES = {
    "avgpool-asym-caffe-ceil": ("AveragePool", 8, dict(strides=[2, 2], pads=[0, 0, 1, 1])),
    "avgpool-asym-include-pad": ("AveragePool", 9, dict(strides=[2, 2], pads=[0, 0, 1, 1], count_include_pad=1)),
    "avgpool-asym-opset11": ("AveragePool", 11, dict(strides=[2, 2], pads=[1, 0, 0, 1])),
    "avgpool-asym-ceil-mode": ("AveragePool", 10, dict(strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)),
    "avgpool-same-lower": ("AveragePool", 9, dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    "conv-same-upper-asym": ("Conv", 9, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "conv-same-upper-opset13": ("Conv", 13, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "maxpool-same-upper": ("MaxPool", 8, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "globalmaxpool": ("GlobalMaxPool", 9, {}),
    "imagescaler": ("ImageScaler", 8, dict(scale=0.017, bias=[-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewritten_op_matches_onnxruntime(case, monkeypatch):
    op, opset, attrs = CASES[case]
    model = single_op(op, opset, **attrs)
    x = np.random.default_rng(1).standard_normal((2, 8, 10, 10)).astype(np.float32) * 3
    net = load_onnx_model(model, ["y"], source=case)
    assert net.metadata.get("deepsim.rewrites"), "the graph was expected to need a rewrite"
    (report,) = compare_onnx(model, x, taps=["y"], net=net, source=case)
    assert report.ref_max_abs > 0
    assert report.rel_torch_ort <= 1e-5, f"{case}: torch vs onnxruntime {report.rel_torch_ort:.2e}"
    # the rewrite is what makes it convert: without it onnx2torch (or the opset upgrade) refuses the graph
    monkeypatch.setattr(torch_convert, "rewrite_for_onnx2torch", lambda model: [])
    with pytest.raises(ConversionError):
        load_onnx_model(model, ["y"], source=case)


def test_the_divisor_map_is_needed():
    """An AveragePool whose pad rows hold zeros must divide edge windows by fewer pixels: check a known value."""
    model = single_op("AveragePool", 9, in_shape=(1, 1, 4, 4), strides=[2, 2], pads=[0, 0, 1, 1])
    net = load_onnx_model(model, ["y"])
    x = torch.ones(1, 1, 4, 4)
    with torch.no_grad():
        y = net(x, "y")
    assert y.shape == (1, 1, 2, 2) and torch.allclose(y, torch.ones_like(y)), "count_include_pad=0: the mean of ones is 1"


def googlenet_like(opset: int = 8) -> onnx.ModelProto:
    """Caffe2-export style: IR 3, batch 1, MaxPool and AveragePool pads [0,0,1,1] (Caffe's ceil), LRN, an inception
    block, Dropout-7 with mask, Reshape [1, -1], Gemm, Softmax."""
    g = Graph(seed=2)
    x = g.conv("data_0", "conv1", 3, 16, 7, strides=[2, 2], pads=[3, 3, 3, 3])
    x = g.op("MaxPool", [x], "pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    x = g.op("LRN", [x], "norm1", size=5, alpha=1e-4, beta=0.75, bias=1.0)
    a = g.conv(x, "inc_1x1", 16, 8, 1)
    b = g.conv(g.conv(x, "inc_3x3_reduce", 16, 8, 1), "inc_3x3", 8, 12, 3, pads=[1, 1, 1, 1])
    c = g.conv(g.op("MaxPool", [x], "inc_pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), "inc_proj", 16, 4, 1)
    x = g.op("Concat", [a, b, c], "inc_output", axis=1)
    x = g.op("AveragePool", [x], "pool5", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    g.nodes.append(helper.make_node("Dropout", [x], ["pool5_drop", "pool5_mask"], name="drop", ratio=0.4))
    x = g.op("Reshape", ["pool5_drop", "shape_1"], "flat")
    x = g.op("Gemm", [x, g.param("fc_w", (10, 24 * 8 * 8), 0.05), g.param("fc_b", (10,), 0.1)], "fc", transB=1)
    g.op("Softmax", [x], "prob")
    return g.model("prob", (1, 3, 64, 64), opset, ints={"shape_1": np.array([1, -1], np.int64)})


def tf_style() -> onnx.ModelProto:
    """TF-export style: ImageScaler preprocessing, SAME padding everywhere (asymmetric at stride 2), GlobalMaxPool."""
    g = Graph(seed=3)
    x = g.op("ImageScaler", ["data_0"], "scaled", scale=1 / 58.0, bias=[-2.1, -2.0, -1.8])
    x = g.conv(x, "conv1", 3, 16, 3, strides=[2, 2], auto_pad="SAME_UPPER")
    x = g.op("MaxPool", [x], "pool1", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    x = g.conv(x, "conv2", 16, 16, 3, auto_pad="SAME_UPPER", group=4)
    x = g.op("AveragePool", [x], "pool2", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    x = g.op("GlobalMaxPool", [x], "gmp")
    x = g.op("Flatten", [x], "flat", axis=1)
    g.op("Gemm", [x, g.param("fc_w", (10, 16), 0.2), g.param("fc_b", (10,), 0.1)], "logits", transB=1)
    return g.model("logits", (1, 3, 63, 63), 9, ir=4)


def shufflenet_like() -> onnx.ModelProto:
    """ResNet/ShuffleNet-style Caffe2 export (opset 9): BatchNormalization, a channel shuffle through Reshapes that
    hard-code batch 1, Sum of branches, AveragePool 3×3 s2 p1 shortcut, Concat, GlobalAveragePool."""
    g = Graph(seed=4)
    x = g.conv("data_0", "conv1", 3, 24, 3, strides=[2, 2], pads=[1, 1, 1, 1])
    bn = lambda x, name, c: g.op("BatchNormalization", [x, g.param(f"{name}_s", (c,), 0.5), g.param(f"{name}_b", (c,), 0.1),  # noqa: E731
                                                        g.param(f"{name}_m", (c,), 0.1), f"{name}_v"], name, epsilon=1e-5)
    for name, c in (("bn1", 24), ("bn2", 24)):
        g.weights[f"{name}_v"] = np.random.default_rng(5).uniform(0.5, 1.5, c).astype(np.float32)
    y = bn(g.conv(x, "gconv1", 24, 24, 1, group=3), "bn1", 24)
    y = g.op("Reshape", [y, "shuffle_shape_1"], "shuffle_a")
    y = g.op("Transpose", [y], "shuffle_t", perm=[0, 2, 1, 3, 4])
    y = g.op("Reshape", [y, "shuffle_shape_2"], "shuffle_b")
    y = bn(g.op("Conv", [y, g.param("dw_w", (24, 1, 3, 3), 0.5)], "dwconv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=24), "bn2", 24)
    y = g.op("Sum", [y, x], "residual")
    s = g.op("AveragePool", [y], "shortcut", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    z = g.conv(y, "down", 24, 24, 3, strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.op("Concat", [z, s], "concat", axis=1)
    x = g.op("GlobalAveragePool", [x], "gap")
    x = g.op("Flatten", [x], "flat")
    g.op("Gemm", [x, g.param("fc_w", (10, 48), 0.2), g.param("fc_b", (10,), 0.1)], "fc", transB=1)
    ints = {"shuffle_shape_1": np.array([1, 3, 8, 16, 16], np.int64), "shuffle_shape_2": np.array([1, 24, 16, 16], np.int64)}
    return g.model("fc", (1, 3, 32, 32), 9, ints=ints)


@pytest.mark.parametrize("name, build, taps", [
    ("googlenet-like", googlenet_like, ["pool1", "norm1", "inc_output", "pool5", "fc", "prob"]),
    ("tf-style", tf_style, ["scaled", "conv1_relu", "pool1", "conv2_relu", "pool2", "gmp", "logits"]),
    ("shufflenet-like", shufflenet_like, ["bn1", "shuffle_b", "residual", "shortcut", "concat", "fc"]),
])
def test_zoo_style_classifier_matches_onnxruntime_at_every_tap(name, build, taps, tmp_path):
    model = build()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    net = converters.load_onnx(path, taps=taps)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    x = np.random.default_rng(6).standard_normal((2, *shape[1:])).astype(np.float32) * 40
    reports = compare_onnx(model, x, taps=taps, net=net, source=name)  # onnxruntime: the untouched file, per sample
    for r in reports:
        assert r.ref_max_abs > 0, f"{name} {r.tap} is all zeros; the comparison would prove nothing"
        assert r.rel_torch_ort <= 1e-4, f"{name} {r.tap}: torch (batch 2) vs onnxruntime {r.rel_torch_ort:.2e}"


def test_a_zoo_style_file_is_a_comparator(tmp_path):
    """Through the registry ('onnx' + the file + a tap): pipeline images in, features out, frozen."""
    from repro.comparators import build_comparator

    path = tmp_path / "googlenet-like.onnx"
    onnx.save(googlenet_like(), str(path))
    comparator = build_comparator("onnx", "inc_output", 64, weights=str(path))
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    features = comparator(images)
    assert features.shape == (3, 24, 16, 16)
    features.sum().backward()
    assert images.grad.abs().sum() > 0 and not any(p.requires_grad for p in comparator.parameters())
