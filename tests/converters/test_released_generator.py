"""The released DeePSiM generators (generator_fc6/fc7/pool5.prototxt of Nguyen et al.'s `synthesizing`) with seeded
random weights written as real caffemodels in both layouts: our `Generator` and the ONNX → torch conversion match
onnxruntime and OpenCV DNN at every layer (≤ 1e-4 relative), and the converted file works as a generator file.

The trained `generator.caffemodel` files are not obtainable here; He-scaled random weights exercise the same
prototxts and the same file layouts, and codes of the scale of CaffeNet features (|N(0,1)|·3) make every
LeakyReLU see negative inputs.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from converters.caffemodel import write_caffemodel
from converters.caffe_proto import parse_binary
from converters.errors import ConversionError
from repro.released_generator import (
    RELEASED, caffe_blobs_of, check_architecture, compare, convert, load_released_generator, main,
)
from repro.synthesize import main as synthesize_main

pytestmark = pytest.mark.usefixtures("one_thread")
BLOBS = ["deconv5", "conv5_1", "deconv4", "conv4_1", "deconv3", "conv3_1", "deconv2", "deconv1", "deconv0"]
TAPS = {"fc6": ["defc7", "defc6", "defc5", "reshape_defc5", *BLOBS], "pool5": ["Rconv6", "Rconv7", "Rconv8", *BLOBS]}
TAPS["fc7"] = TAPS["fc6"]


def code_for(name: str, n: int = 1, seed: int = 1) -> np.ndarray:
    shape = (256, 6, 6) if name == "pool5" else (4096,)
    return (np.abs(np.random.default_rng(seed).standard_normal((n, *shape))) * 3).astype(np.float32)


@pytest.fixture(scope="module")
def caffemodel(asset, random_weights, tmp_path_factory):
    cache = {}

    def get(name: str, layout: str, prototxt=None):
        key = (name, layout, str(prototxt))
        if key not in cache:
            prototxt = prototxt or asset(RELEASED[name])
            path = tmp_path_factory.mktemp("gen") / f"generator_{name}_{layout}.caffemodel"
            cache[key] = prototxt, write_caffemodel(path, random_weights(prototxt, seed=0), prototxt, layout=layout)
        return cache[key]

    return get


def test_released_prototxts_are_the_generator_architecture(asset):
    assert check_architecture(asset(RELEASED["fc6"])) == ((4096,), 0.3)
    assert check_architecture(asset(RELEASED["fc7"])) == ((4096,), 0.3)
    assert check_architecture(asset(RELEASED["pool5"])) == ((256, 6, 6), 0.3)


@pytest.mark.parametrize("edit, reason", [
    (lambda t: t.replace("num_output: 128", "num_output: 96", 1), r"deconv3.*Deconvolution', 96"),
    (lambda t: t.replace("negative_slope: 0.3", "negative_slope: 0.2", 1), "one LeakyReLU slope"),
    (lambda t: re.sub(r"layer \{\s*name: \"relu_deconv2\".*?\n\}\n", "", t, flags=re.S), r"missing after \['deconv2'\]"),
])
def test_other_architectures_are_refused(asset, tmp_path, edit, reason):
    text = asset(RELEASED["pool5"]).read_text()
    edited = edit(text)
    assert edited != text
    path = tmp_path / "edited.prototxt"
    path.write_text(edited)
    with pytest.raises(ConversionError, match=reason):
        check_architecture(path)


@pytest.mark.slow
def test_227_is_the_centre_crop_of_256_in_pipeline_units(caffemodel):
    """act_max.py crops 256 → 227 at (14, 14); Generator(227) does the same, then maps Caffe units (BGR − mean)
    to RGB [0, 1]."""
    prototxt, path = caffemodel("pool5", "v2")
    full = load_released_generator(prototxt, path, resolution=256)
    cropped = load_released_generator(prototxt, path, resolution=227)
    code = torch.from_numpy(code_for("pool5", 2))
    caffe_units = caffe_blobs_of(full, code)["deconv0"]
    with torch.no_grad():
        image = cropped(code)
    mean = torch.tensor((104.00698793, 116.66876762, 122.67891434)).view(1, 3, 1, 1)
    expected = ((caffe_units[..., 14:241, 14:241] + mean) / 255).flip(1)
    assert image.shape == (2, 3, 227, 227)
    assert torch.allclose(image, expected, atol=1e-4)
    assert not torch.allclose(image, ((caffe_units[..., 15:242, 15:242] + mean) / 255).flip(1), atol=1e-4)


@pytest.mark.slow
def test_converted_file_loads_as_a_generator_file(caffemodel, tmp_path):
    from repro.generator_file import load_generator

    prototxt, path = caffemodel("pool5", "v1")
    out = tmp_path / "pool5.generator.pt"
    record = convert(prototxt, path, out)
    assert record["encoder"] == "caffenet" and record["tap"] == "pool5"
    loaded = load_generator(out)
    direct = load_released_generator(prototxt, path)
    code = torch.from_numpy(code_for("pool5"))
    with torch.no_grad():
        assert torch.equal(loaded.generator(code), direct(code))
    assert loaded.source["converted_from"]["caffemodel"]["sha256"]


def test_weights_of_another_prototxt_are_refused(caffemodel, asset):
    _, pool5_weights = caffemodel("pool5", "v2")
    with pytest.raises(ConversionError, match="no weights for this layer|shape"):
        load_released_generator(asset(RELEASED["fc6"]), pool5_weights)


@pytest.mark.slow
@pytest.mark.parametrize("name, layout", [("pool5", "v2"), ("pool5", "v1"), ("fc6", "v2"), ("fc7", "v1")])
def test_every_layer_matches_opencv_and_onnxruntime(name, layout, caffemodel):
    prototxt, path = caffemodel(name, layout)
    stored = parse_binary(path)
    assert bool(stored.layers) == (layout == "v1") and bool(stored.layer) == (layout == "v2")
    rows = compare(prototxt, path, code_for(name))
    assert [r["tap"] for r in rows] == TAPS[name]
    generator = load_released_generator(prototxt, path, resolution=256)
    blobs = caffe_blobs_of(generator, torch.from_numpy(code_for(name)))
    assert (blobs["deconv5"] < 0).any(), "LeakyReLU must see negative inputs, else its slope is untested"
    for r in rows:
        assert r["ref_max_abs"] > 1e-3, f"{r['tap']} vanished; the comparison would prove nothing"
        for key, value in r.items():
            if key.startswith("rel_"):
                assert value <= 1e-4, f"{name}/{layout} {r['tap']}: {key} {value:.2e}"
    assert rows[-1]["shape"][1:] == (3, 256, 256)


@pytest.mark.slow
def test_the_slope_is_read_from_the_prototxt(asset, caffemodel, tmp_path):
    """A prototxt with negative_slope 0.1 everywhere: the generator takes 0.1, and still matches OpenCV."""
    edited = tmp_path / "generator_pool5_slope.prototxt"
    edited.write_text(asset(RELEASED["pool5"]).read_text().replace("negative_slope: 0.3", "negative_slope: 0.1"))
    prototxt, path = caffemodel("pool5", "v2", edited)
    assert check_architecture(prototxt)[1] == pytest.approx(0.1)
    rows = compare(prototxt, path, code_for("pool5"))
    assert max(r["rel_generator_opencv"] for r in rows) <= 1e-4
    slopes = {m.negative_slope for m in load_released_generator(prototxt, path).modules()
              if isinstance(m, torch.nn.LeakyReLU)}
    assert len(slopes) == 1 and slopes.pop() == pytest.approx(0.1)


@pytest.mark.slow
def test_cli_with_a_users_caffenet_and_a_released_generator(asset, random_weights, tmp_path):
    """A user's CaffeNet (here random weights in a real caffemodel) as classifier and, through the same file, as
    the released pool5 generator's encoder for the bounds."""
    caffenet_proto = asset("caffe/bvlc_reference_caffenet_deploy.prototxt")
    caffenet = write_caffemodel(tmp_path / "caffenet.caffemodel", random_weights(caffenet_proto, seed=0), caffenet_proto)
    gen_proto = asset(RELEASED["pool5"])
    gen_weights = write_caffemodel(tmp_path / "generator.caffemodel", random_weights(gen_proto, seed=1), gen_proto)
    gen_file = tmp_path / "pool5.generator.pt"
    convert(gen_proto, gen_weights, gen_file)
    out = tmp_path / "syn"
    assert synthesize_main(["--generator", str(gen_file), "--classifier", "caffenet", "--classifier-weights",
                            str(caffenet), "--unit", "945", "--steps", "3", "--out", str(out)]) == 0
    record = json.loads((out / "synthesize.json").read_text())
    assert record["classifier_resolution"] == 227 and record["encoder"] == "caffenet:pool5"
    assert np.mean(record["units"][0]["end"]) > np.mean(record["units"][0]["start"])


def test_command_line_errors_are_one_line(asset, caffemodel, tmp_path, capsys):
    _, weights = caffemodel("pool5", "v2")
    assert main([str(asset("caffe/bvlc_reference_caffenet_deploy.prototxt")), str(weights), str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has one input 'feat'" in err, err
    assert not (tmp_path / "g.pt").exists()
