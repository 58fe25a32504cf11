"""`python -m repro.features`: the first smoke job."""
from __future__ import annotations

import numpy as np

from repro.features import main


def test_features_cli_saves_pool5(tmp_path, assets, capsys):
    out = tmp_path / "f.npz"
    images = [str(assets / "caffe" / "cat.jpg"), str(assets / "caffe" / "fish-bike.jpg")]
    assert main(["--net", "alexnet", "--layer", "pool5", "--resolution", "227", "--out", str(out), *images]) == 0
    saved = np.load(out)
    assert saved["features"].shape == (2, 256, 6, 6)
    assert (saved["features"] >= 0).all() and saved["features"].std() > 0
    assert "(2, 256, 6, 6)" in capsys.readouterr().out


def test_features_cli_clear_errors(tmp_path, capsys):
    assert main(["--net", "caffenet", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--net caffenet needs your bvlc_reference_caffenet.caffemodel" in err and "pass --weights FILE" in err
    assert "--set" not in err  # this command's own flag, not a train flag
    assert main(["--net", "alexnet", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_features_cli_skips_an_undecodable_image_in_a_folder(tmp_path, assets, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a-cat.jpg").write_bytes((assets / "caffe" / "cat.jpg").read_bytes())
    (folder / "b-broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "f.npz"
    assert main(["--net", "alexnet", "--resolution", "64", "--out", str(out), str(folder)]) == 0
    saved = np.load(out)
    assert [p.rsplit("/", 1)[-1] for p in saved["paths"]] == ["a-cat.jpg"]  # the features of the good one kept
    assert saved["features"].shape[0] == 1
    err = capsys.readouterr().err
    assert "skipping cannot read image" in err and "b-broken.jpg" in err


def test_features_cli_refuses_alexnet_fc_taps_without_their_weights(tmp_path, assets, capsys):
    """The shipped AlexNet has conv1–conv5 only: fc6 would be torch's random initialisation, different on every
    run. Refused in one line before any image is read; nothing written."""
    out = tmp_path / "f.npz"
    for layer in ("fc6", "fc8"):
        assert main(["--net", "alexnet", "--layer", layer, "--resolution", "64", "--out", str(out),
                     str(assets / "caffe" / "cat.jpg")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: tap {layer} has no trained weights"), err
        assert "full torchvision AlexNet state dict" in err[0]
    assert not out.exists()


def test_features_help_names_only_flags_that_exist(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--weights" in out and "--onnx" not in out  # it once told users to pass a non-existent --onnx
