"""Each supported Caffe layer, on small nets with random weights, against OpenCV's Caffe importer.

The cases are chosen where Caffe's arithmetic differs from the obvious ONNX/torch one: pooled sizes
rounded up, AVE windows clipped to the padded input, in-place chains, per-blob Eltwise coefficients,
BatchNorm's stored scale factor, WITHIN_CHANNEL LRN.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.caffe2onnx import caffe_pooled_size, caffe_to_onnx, convert_caffe
from converters.caffe_net import read_net
from converters.caffemodel import write_caffemodel
from converters.torch_convert import load_onnx_model
from converters.verify import compare_caffe


def _net(shape: tuple[int, ...], body: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n{body}'


def _pool(name: str, bottom: str, spec: str) -> str:
    return f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param {{ {spec} }} }}\n'


def _conv(name: str, bottom: str, spec: str) -> str:
    return f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ {spec} }} }}\n'


CASES = {
    # Caffe rounds pooled sizes up: 8 → 4 (floor would give 3); AVE then divides by the window
    # clipped to the input (no padding), MAX ignores the overhang.
    "pool_ceil": ((2, 3, 8, 8), _pool("max", "data", "pool: MAX kernel_size: 3 stride: 2")
                  + _pool("ave", "data", "pool: AVE kernel_size: 3 stride: 2")),
    # With padding, Caffe's AVE divisor counts the padding but not the overhang past it.
    "pool_ave_padded": ((2, 3, 8, 7), _pool("ave", "data", "pool: AVE kernel_size: 3 stride: 2 pad: 1")
                        + _pool("ave2", "data", "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1")),
    "pool_max_padded": ((2, 3, 6, 9), _pool("max", "data", "pool: MAX kernel_size: 3 stride: 2 pad: 1")),
    "pool_global": ((2, 4, 5, 7), _pool("gave", "data", "pool: AVE global_pooling: true")
                    + _pool("gmax", "data", "pool: MAX global_pooling: true")),
    "conv_geometry": ((2, 4, 12, 11), _conv("dil", "data", "num_output: 6 kernel_size: 3 dilation: 2 pad: 1")
                      + _conv("rect", "data", "num_output: 4 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 0 group: 2")
                      + _conv("nobias", "data", "num_output: 3 kernel_size: 1 bias_term: false")),
    "deconvolution": ((2, 4, 5, 5), 'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
                      'convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }\n'),
    "activations_in_place": ((2, 3, 6, 6), _conv("c", "data", "num_output: 4 kernel_size: 3")
                             + 'layer { name: "leaky" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.3 } }\n'
                             + 'layer { name: "drop" type: "Dropout" bottom: "c" top: "c" }\n'
                             + 'layer { name: "sig" type: "Sigmoid" bottom: "c" top: "s" }\n'
                             + 'layer { name: "tanh" type: "TanH" bottom: "c" top: "t" }\n'
                             + 'layer { name: "drop2" type: "Dropout" bottom: "t" top: "t2" }\n'),
    "lrn": ((2, 7, 6, 6), 'layer { name: "across" type: "LRN" bottom: "data" top: "across" lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 } }\n'
            'layer { name: "within" type: "LRN" bottom: "data" top: "within" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }\n'),
    "eltwise_concat": ((2, 3, 5, 5), _conv("a", "data", "num_output: 4 kernel_size: 1") + _conv("b", "data", "num_output: 4 kernel_size: 1")
                       + 'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { coeff: 0.5 coeff: -2 } }\n'
                       + 'layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" bottom: "sum" top: "prod" eltwise_param { operation: PROD } }\n'
                       + 'layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "max" eltwise_param { operation: MAX } }\n'
                       + 'layer { name: "cat" type: "Concat" bottom: "a" bottom: "max" bottom: "data" top: "cat" }\n'),
    "batchnorm_scale": ((2, 5, 4, 4), 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.001 } }\n'
                        'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }\n'
                        'layer { name: "sc2" type: "Scale" bottom: "bn" top: "sc2" }\n'),
    "flatten_reshape_fc_softmax": ((2, 4, 3, 6), 'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
                                   'layer { name: "flat2" type: "Flatten" bottom: "data" top: "flat2" flatten_param { axis: 2 } }\n'
                                   'layer { name: "rs" type: "Reshape" bottom: "data" top: "rs" reshape_param { shape { dim: 0 dim: -1 dim: 9 } } }\n'
                                   'layer { name: "rs2" type: "Reshape" bottom: "data" top: "rs2" reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 } }\n'
                                   'layer { name: "fc" type: "InnerProduct" bottom: "rs" top: "fc" inner_product_param { num_output: 5 } }\n'
                                   'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'
                                   'layer { name: "prob4d" type: "Softmax" bottom: "data" top: "prob4d" }\n'),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_opencv(case, tmp_path, random_weights):
    shape, body = CASES[case]
    prototxt = tmp_path / f"{case}.prototxt"
    prototxt.write_text(_net(shape, body))
    caffemodel = write_caffemodel(tmp_path / f"{case}.caffemodel", random_weights(prototxt, seed=1), prototxt)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    reports = compare_caffe(prototxt, caffemodel, x)
    assert reports, "no taps"
    for r in reports:
        assert r.ref_max_abs > 0, f"{r.tap} is all zeros; the case proves nothing"
        assert r.rel_torch_ref <= 1e-5, f"{case}/{r.tap}: torch vs OpenCV {r.rel_torch_ref:.2e} at shape {r.shape}"
        assert r.rel_ort_ref <= 1e-5, f"{case}/{r.tap}: onnxruntime vs OpenCV {r.rel_ort_ref:.2e}"


def test_lrn_k_and_transposed_inner_product_follow_caffe(tmp_path):
    """Two settings OpenCV's importer ignores (it fixes LRN's k at 1 and reads every InnerProduct
    weight as (out, in)); checked against Caffe's formulas written out in numpy instead."""
    prototxt = tmp_path / "k.prototxt"
    prototxt.write_text(_net((2, 6), 'layer { name: "fct" type: "InnerProduct" bottom: "data" top: "fct" '
                                     'inner_product_param { num_output: 3 transpose: true } }\n'
                                     'layer { name: "rs" type: "Reshape" bottom: "fct" top: "rs" reshape_param { shape { dim: 0 dim: 3 dim: 1 dim: 1 } } }\n'
                                     'layer { name: "lrn" type: "LRN" bottom: "rs" top: "lrn" lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 2 } }\n'))
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    net = load_onnx_model(caffe_to_onnx(read_net(prototxt), {"fct": [weight, bias]}).model)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    fc = x @ weight + bias  # Caffe: transpose means the blob is stored (in, out)
    squares = np.pad(fc**2, ((0, 0), (1, 1)))
    window_sum = squares[:, :-2] + squares[:, 1:-1] + squares[:, 2:]
    lrn = fc / (2 + 0.5 / 3 * window_sum) ** 0.6  # x / (k + α/n Σ x²)^β
    with torch.no_grad():
        feats = net.features(torch.from_numpy(x), ["fct", "lrn"])
    np.testing.assert_allclose(feats["fct"].numpy(), fc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats["lrn"].numpy().reshape(2, 3), lrn, rtol=1e-5, atol=1e-6)


def test_pooled_sizes_follow_caffe():
    assert caffe_pooled_size(8, 3, 2, 0) == 4 and caffe_pooled_size(8, 3, 2, 0, ceil=False) == 3
    assert caffe_pooled_size(54, 3, 2, 0) == 27  # CaffeNet pool1 at 224: floor would give 26
    # rounding up would start the last window inside the padding: Caffe drops it
    assert caffe_pooled_size(5, 2, 2, 1) == 3


def test_floor_round_mode_is_torch_floor_pooling(tmp_path, random_weights):
    """round_mode: FLOOR (newer Caffe) gives plain floor pooling; OpenCV does not read it, torch does."""
    prototxt = tmp_path / "floor.prototxt"
    prototxt.write_text(_net((1, 2, 8, 8), _pool("p", "data", "pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR")))
    net = load_onnx_model(caffe_to_onnx(read_net(prototxt), {}).model)
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(net(x, "p"), torch.nn.functional.avg_pool2d(x, 3, 2))


def test_batch_is_dynamic_whatever_the_prototxt_says(tmp_path, random_weights):
    shape, body = CASES["flatten_reshape_fc_softmax"]
    prototxt = tmp_path / "b.prototxt"
    prototxt.write_text(_net(shape, body))
    caffemodel = write_caffemodel(tmp_path / "b.caffemodel", random_weights(prototxt), prototxt)
    conversion = convert_caffe(prototxt, caffemodel)
    assert conversion.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    net = load_onnx_model(conversion.model)
    x = torch.randn(5, *shape[1:])
    with torch.no_grad():
        batched = net(x, "prob")
        single = torch.cat([net(x[i : i + 1], "prob") for i in range(5)])
    torch.testing.assert_close(batched, single)


class _Scale(torch.nn.Module):
    """An input transform with a buffer, as the comparators' CaffeInput has one."""

    def __init__(self):
        super().__init__()
        self.register_buffer("factor", torch.tensor(2.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.factor


def test_a_network_is_built_with_its_input_transform(tmp_path):
    """The input transform is a constructor argument, registered like any submodule (state_dict, .to()); identity
    when none is given: nothing attaches it afterwards."""
    prototxt = tmp_path / "t.prototxt"
    prototxt.write_text(_net((1, 2, 8, 8), _pool("p", "data", "pool: MAX kernel_size: 2 stride: 2")))
    model = caffe_to_onnx(read_net(prototxt), {}).model
    scale = _Scale()
    net = load_onnx_model(model, transform=scale)
    assert net.transform is scale and "transform.factor" in net.state_dict()
    x = torch.rand(1, 2, 8, 8)
    torch.testing.assert_close(net(net.transform(x), "p"), 2 * torch.nn.functional.max_pool2d(x, 2))
    plain = load_onnx_model(model)
    assert isinstance(plain.transform, torch.nn.Identity) and torch.equal(plain.transform(x), x)
