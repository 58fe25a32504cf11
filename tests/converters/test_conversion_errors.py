"""Inputs that cannot be converted faithfully fail with a ConversionError naming the file and layer."""
from __future__ import annotations

import re

import numpy as np
import pytest

from converters import ConversionError, convert_caffe
from converters.caffe_net import read_net
from converters.caffemodel import write_caffemodel
from converters.torch_convert import load_onnx_model


@pytest.fixture(scope="module")
def lenet(asset):
    return asset("lenet/lenet.prototxt"), asset("lenet/lenet_iter_10000.caffemodel")


def _edited_prototxt(lenet, tmp_path, old: str, new: str):
    text = lenet[0].read_text()
    assert old in text
    path = tmp_path / "edited.prototxt"
    path.write_text(text.replace(old, new, 1))
    return path


def test_truncated_caffemodel(lenet, tmp_path):
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(lenet[1].read_bytes()[:100_000])
    with pytest.raises(ConversionError, match=r"caffemodel .*truncated\.caffemodel is not a valid Caffe NetParameter"):
        convert_caffe(lenet[0], truncated)


def test_random_bytes_are_not_a_caffemodel(lenet, tmp_path):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(ConversionError, match="junk.caffemodel"):
        convert_caffe(lenet[0], junk)


def test_a_text_file_is_not_a_caffemodel(lenet):
    with pytest.raises(ConversionError, match="lenet.prototxt"):
        convert_caffe(lenet[0], lenet[0])


def test_prototxt_that_does_not_fit_the_weights(lenet, tmp_path):
    wider = _edited_prototxt(lenet, tmp_path, "num_output: 50", "num_output: 64")
    with pytest.raises(ConversionError, match=r"layer 'conv2' \(Convolution\): weight blob in caffemodel .* has shape "
                                              r"\(50, 20, 5, 5\) but the prototxt implies \(64, 20, 5, 5\)"):
        convert_caffe(wider, lenet[1])
    # a different spatial size changes what ip1 must hold
    bigger = _edited_prototxt(lenet, tmp_path, "dim: 28 dim: 28", "dim: 32 dim: 32")
    with pytest.raises(ConversionError, match=r"layer 'ip1' \(InnerProduct\): weight blob .* \(500, 800\) .* \(500, 1250\)"):
        convert_caffe(bigger, lenet[1])
    renamed = _edited_prototxt(lenet, tmp_path, 'name: "ip2"', 'name: "classifier"')
    with pytest.raises(ConversionError, match=r"layer 'classifier' \(InnerProduct\): caffemodel .* has no weights"):
        convert_caffe(renamed, lenet[1])
    no_bias = _edited_prototxt(lenet, tmp_path, "num_output: 500", "num_output: 500 bias_term: false")
    with pytest.raises(ConversionError, match=r"layer 'ip1' .* holds 2 blobs .* implies 1 \(weight\)"):
        convert_caffe(no_bias, lenet[1])


def test_unknown_layer_type(lenet, tmp_path):
    odd = _edited_prototxt(lenet, tmp_path, 'type: "ReLU"', 'type: "Swish"')
    with pytest.raises(ConversionError, match=r"edited.prototxt: layer 'relu1' \(Swish\): layer type 'Swish' is not supported"):
        convert_caffe(odd, lenet[1])


def test_typo_in_a_layer_parameter(lenet, tmp_path):
    typo = _edited_prototxt(lenet, tmp_path, "kernel_size: 5", "kernal_size: 5")
    with pytest.raises(ConversionError, match=r"edited.prototxt:\d+: Caffe's ConvolutionParameter has no field 'kernal_size'"):
        convert_caffe(typo, lenet[1])


def test_duplicate_layer_names_are_ambiguous(lenet, tmp_path):
    twice = _edited_prototxt(lenet, tmp_path, 'name: "ip2"', 'name: "ip1"')
    with pytest.raises(ConversionError, match=r"two layers are named 'ip1'"):
        convert_caffe(twice, lenet[1])


def test_training_prototxt_is_refused(lenet, tmp_path):
    train = tmp_path / "train.prototxt"
    train.write_text(lenet[0].read_text().replace('type: "Softmax"', 'type: "SoftmaxWithLoss"'))
    with pytest.raises(ConversionError, match="training-only layer; convert the deploy prototxt"):
        convert_caffe(train, lenet[1])


def test_data_layer_needs_an_input_shape(lenet, tmp_path):
    data = _edited_prototxt(lenet, tmp_path, 'type: "Input"', 'type: "Data"')
    with pytest.raises(ConversionError, match=r"shape of input 'data' is not stated.*input_shapes="):
        read_net(data)
    net = read_net(data, {"data": (1, 1, 28, 28)})
    assert net.inputs == {"data": (1, 1, 28, 28)}


def test_write_caffemodel_refuses_weights_for_unknown_layers(lenet, tmp_path):
    with pytest.raises(ValueError, match=r"weights given for layers \['conv9'\]"):
        write_caffemodel(tmp_path / "x.caffemodel", {"conv9": [np.zeros(3)]}, lenet[0])


def test_fuzzed_caffemodels_raise_conversion_error_or_convert(lenet, tmp_path):
    """30 seeded byte flips and truncations: a clear ConversionError or a model, never another exception."""
    prototxt, caffemodel = lenet
    original = caffemodel.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"model": 0, "error": 0}
    for trial in range(30):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif trial % 3 == 1:  # the first kilobytes hold names, types and shapes
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, 3000))] = int(rng.integers(0, 256))
        else:
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.integers(0, len(data)))
                data[position] ^= 1 << int(rng.integers(0, 8))
        fuzzed = tmp_path / f"fuzz{trial}.caffemodel"
        fuzzed.write_bytes(bytes(data))
        try:
            load_onnx_model(convert_caffe(prototxt, fuzzed).model)
            outcomes["model"] += 1
        except ConversionError as err:
            assert re.search(rf"fuzz{trial}\.caffemodel|layer '", str(err)), f"trial {trial}: the error names neither file nor layer: {err}"
            outcomes["error"] += 1
    assert outcomes["model"] and outcomes["error"], outcomes  # both paths were exercised
