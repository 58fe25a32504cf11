"""Our Caffe schema reads what Caffe writes: field numbers, packed and unpacked floats, legacy dims."""
from __future__ import annotations

import numpy as np
import pytest

from converters.caffe_net import read_net
from converters.caffe_proto import array_blob, blob_array, message_class, parse_bytes, parse_prototxt
from converters.errors import ConversionError


def test_wire_format_field_numbers():
    """Hand-encoded bytes: NetParameter.layer = 100, LayerParameter.name = 1 / blobs = 7,
    BlobProto.shape = 7 (BlobShape.dim = 1, packed), BlobProto.data = 5 (packed float)."""
    dims = bytes([0x0A, 2, 2, 3])  # BlobShape: field 1, length 2, dims 2 and 3
    floats = np.arange(6, dtype="<f4").tobytes()
    blob = bytes([0x3A, len(dims)]) + dims + bytes([0x2A, len(floats)]) + floats
    layer = bytes([0x0A, 2]) + b"fc" + bytes([0x3A, len(blob)]) + blob
    net = bytes([0xA2, 0x06, len(layer)]) + layer  # field 100, wire type 2 → varint 0x6A2 → a2 06
    parsed = parse_bytes(net, "NetParameter", "test bytes")
    assert parsed.layer[0].name == "fc"
    np.testing.assert_array_equal(blob_array(parsed.layer[0].blobs[0], "t"), np.arange(6).reshape(2, 3))


def test_unpacked_and_double_blobs():
    typed = message_class("BlobProto")()
    typed.shape.dim.extend([4])
    typed.double_data.extend([1.5, 2.5, 3.5, 4.5])
    raw = parse_bytes(typed.SerializeToString(), "BlobProto", "t")
    np.testing.assert_array_equal(blob_array(raw, "t"), [1.5, 2.5, 3.5, 4.5])
    # floats written one field each (wire type 5) instead of packed
    unpacked = bytes([0x3A, 3, 0x0A, 1, 2]) + b"".join(bytes([0x2D]) + np.float32(v).tobytes() for v in (7, 8))
    np.testing.assert_array_equal(blob_array(parse_bytes(unpacked, "BlobProto", "t"), "t"), [7, 8])


def test_blob_count_must_match_its_shape():
    blob = array_blob(np.zeros((2, 3), np.float32))
    blob.shape.dim[1] = 4
    with pytest.raises(ConversionError, match=r"layer X: blob states shape \(2, 4\) \(8 values\) but holds 6"):
        blob_array(blob, "layer X")


def test_v1_prototxt_with_input_dims_and_phase_rules(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_text('''name: "old"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "drop" type: DROPOUT bottom: "conv" top: "conv" include { phase: TRAIN } }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
''')
    net = read_net(path)
    assert net.inputs == {"data": (1, 3, 8, 8)}
    assert [(l.name, l.type) for l in net.layers] == [("conv", "Convolution"), ("relu", "ReLU"), ("pool", "Pooling")]
    assert net.layers[2].param.pool == 1 and net.layers[0].param.num_output == 4


def test_unknown_parameters_of_unconverted_layers_are_skipped(tmp_path):
    """Forks add fields (e.g. DeePSiM's `msra_coeff` in fillers); they do not change inference."""
    path = tmp_path / "fork.prototxt"
    path.write_text('input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
                    'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                    'convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "msra" msra_coeff: 1.8 } } '
                    'python_param { module: "m" layer: "l" } }\n')
    assert parse_prototxt(path).layer[0].convolution_param.weight_filler.type == "msra"

