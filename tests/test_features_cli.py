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
    assert "needs the original weights" in capsys.readouterr().err
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
