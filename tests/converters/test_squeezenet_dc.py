"""Deep-Compression SqueezeNet: decoded to the last byte, equal to OpenCV, and it classifies ImageNet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.caffemodel import read_weights, write_caffemodel
from converters.errors import ConversionError
from converters.squeezenet_dc import decode, load_squeezenet, top1
from converters.verify import compare_caffe

TOP1_JSON = Path(__file__).resolve().parents[2] / "converters" / "squeezenet_top1.json"


@pytest.fixture(scope="module")
def squeezenet(asset):
    return asset("squeezenet-dc/SqueezeNet_deploy.prototxt"), asset("squeezenet-dc/compressed_SqueezeNet.net")


def test_decoder_consumes_the_whole_file_into_sparse_weights(squeezenet):
    weights = decode(*squeezenet)  # raises unless every byte is consumed
    assert len(weights) == 26 and list(weights)[0] == "conv1" and list(weights)[-1] == "conv_final"
    assert weights["conv1"][0].shape == (96, 3, 7, 7) and weights["conv_final"][0].shape == (1000, 512, 1, 1)
    header = np.frombuffer(squeezenet[1].read_bytes()[:26 * 4], "<u4")
    stored = [int(np.count_nonzero(w)) for w, _ in weights.values()]
    # every stored weight is non-zero except the zeros that bridge gaps longer than 15
    assert all(s <= n for s, n in zip(stored, header)) and sum(stored) > 0.98 * header.sum()
    density = sum(stored) / sum(w.size for w, _ in weights.values())
    assert 0.25 < density < 0.45, f"Deep Compression keeps about a third of SqueezeNet's weights, got {density:.2f}"


def test_decoder_rejects_a_truncated_or_padded_file(squeezenet, tmp_path):
    prototxt, compressed = squeezenet
    data = compressed.read_bytes()
    (tmp_path / "short.net").write_bytes(data[:-1])
    with pytest.raises(ConversionError, match=r"short.net ends inside layer 'conv_final' gaps"):
        decode(prototxt, tmp_path / "short.net")
    (tmp_path / "long.net").write_bytes(data + b"\0")
    with pytest.raises(ConversionError, match=r"1 bytes left after the last layer"):
        decode(prototxt, tmp_path / "long.net")


def test_decoded_squeezenet_matches_opencv(squeezenet, tmp_path):
    prototxt, compressed = squeezenet
    weights = decode(prototxt, compressed)
    caffemodel = write_caffemodel(tmp_path / "squeezenet.caffemodel", weights, prototxt)
    assert set(read_weights(caffemodel)) == set(weights)
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32) * 50
    taps = ["conv1", "pool1", "fire2/concat", "fire5/concat", "pool8", "conv_final", "pool_final"]
    for r in compare_caffe(prototxt, caffemodel, x, taps=taps):
        assert r.ref_max_abs > 0, r.tap
        assert r.rel_torch_ref <= 1e-4 and r.rel_ort_ref <= 1e-4, f"{r.tap}: {r.rel_torch_ref:.2e} / {r.rel_ort_ref:.2e}"


@pytest.mark.slow
def test_squeezenet_top1_on_an_imagenet_subset(squeezenet, asset, assets):
    net = load_squeezenet(*squeezenet, taps=["pool_final"])
    result = top1(net, assets / "imagenet-1k-256", asset("caffe/synset_words.txt"), limit=100)
    assert result["n"] == 100
    assert result["top1"] >= 0.5, f"top-1 {result['top1']:.3f} on 100 images; the decoded weights are wrong"


def test_recorded_top1_has_provenance():
    record = json.loads(TOP1_JSON.read_text())
    assert record["n_images"] == 1000 and 0.6 <= record["top1"] <= 0.7
    assert record["inputs"]["compressed"]["sha256"] == "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261"
    assert record["inputs"]["images"]["files_sha256"] == "6cd031071b7586892a399b05a5427c2ed742522f15796a0d0d8e2fe03748427b"
    assert record["command"].startswith("python -m converters squeezenet-top1")
