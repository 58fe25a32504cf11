"""`python -m converters …` on the real LeNet files: outputs, manifest, exit codes."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

import converters
from converters.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lenet(asset):
    return asset("lenet/lenet.prototxt"), asset("lenet/lenet_iter_10000.caffemodel")


def test_caffe2onnx_then_torch_from_the_onnx(lenet, tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    assert main(["caffe2onnx", str(lenet[0]), str(lenet[1]), str(out)]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 13 and [o.name for o in model.graph.output][-1] == "prob"
    assert main(["torch", str(out), str(tmp_path / "from_onnx")]) == 0
    manifest = json.loads((tmp_path / "from_onnx" / "manifest.json").read_text())
    assert manifest["sources"]["onnx"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["verification"]["max_rel"] <= 1e-5


def test_input_shape_for_a_data_layer_prototxt(lenet, tmp_path):
    data_layer = tmp_path / "train_style.prototxt"
    data_layer.write_text(lenet[0].read_text().replace('type: "Input"', 'type: "Data"'))
    out = tmp_path / "lenet.onnx"
    assert main(["caffe2onnx", str(data_layer), str(lenet[1]), str(out), "--input-shape", "1,1,28,28"]) == 0
    assert [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim][1:] == [1, 28, 28]


def test_torch_writes_a_loadable_state_dict_and_manifest(lenet, tmp_path):
    out_dir = tmp_path / "lenet"
    assert main(["torch", str(lenet[0]), str(lenet[1]), str(out_dir)]) == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["sources"]["caffemodel"]["sha256"] == "846f9133807d2314ca63382069646ec8c11ac87881825efc6b5145339351f967"
    assert manifest["opset"] == 13 and manifest["taps"]["pool2"] == [None, 50, 4, 4]
    assert manifest["verification"]["reference"] == "opencv" and manifest["verification"]["max_rel"] <= 1e-4
    state = torch.load(out_dir / "model.pt", weights_only=True)
    assert manifest["state_dict"]["sha256"] == hashlib.sha256((out_dir / "model.pt").read_bytes()).hexdigest()
    net = converters.load_caffe(*lenet)
    net.load_state_dict(state, strict=True)


def test_verify_prints_a_table_and_passes(lenet, tmp_path, capsys):
    assert main(["verify", str(lenet[0]), str(lenet[1]), "--inputs", "3", "--json", str(tmp_path / "v.json")]) == 0
    printed = capsys.readouterr().out
    assert "torch-opencv abs" in printed and "OK: largest relative difference" in printed
    assert [row["tap"] for row in json.loads((tmp_path / "v.json").read_text())["per_tap"]][:2] == ["conv1", "pool1"]
    # a tolerance no float computation meets makes verify fail with status 1
    assert main(["verify", str(lenet[0]), str(lenet[1]), "--scale", "50", "--tolerance", "1e-12"]) == 1


def test_squeezenet_dc_writes_a_caffemodel(asset, tmp_path):
    asset("squeezenet-dc/compressed_SqueezeNet.net")
    out = tmp_path / "squeezenet.caffemodel"
    assert main(["squeezenet-dc", str(out), "--layout", "v1"]) == 0
    assert len(converters.caffe_blobs(asset("squeezenet-dc/SqueezeNet_deploy.prototxt"), out)) == 26


@pytest.mark.parametrize("argv, message", [
    (["caffe2onnx", "missing.prototxt", "x", "y"], "no such file: missing.prototxt"),
    (["torch", "only_out_dir"], "torch takes PROTOTXT CAFFEMODEL OUT_DIR"),
    (["verify", "{prototxt}"], "give PROTOTXT CAFFEMODEL, or one .onnx file"),
    (["verify", "{prototxt}", "{prototxt}", "--inputs", "0"], "--inputs must be at least 1"),
    (["verify", "{prototxt}", "{prototxt}"], "is not a valid Caffe NetParameter"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_status_2(argv, message, lenet, capsys):
    argv = [a.format(prototxt=lenet[0]) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse-level errors
        status = exit.code
    assert status == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.slow
def test_command_line_errors_have_no_traceback(lenet):
    """The same through a real interpreter: one line on stderr, status 2, for a usage error and a bad file."""
    for argv in (["torch", "only_out_dir"], ["caffe2onnx", str(lenet[0]), str(lenet[0]), "out.onnx"]):
        result = subprocess.run([sys.executable, "-m", "converters", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
