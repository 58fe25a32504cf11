"""`python -m repro.figures`: runs side by side on the same evaluation images, with provenance."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from repro.config import make_config
from repro.figures import main
from repro.loop import Session, train


def smoke_run(folder, **overrides):
    config = make_config("smoke", {"eval_images": 4, **overrides})
    folder.mkdir()
    (folder / "config.json").write_text(config.to_json())
    train(config, folder, Session(show_progress=False))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, assets):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("figures")
    return (smoke_run(base / "deepsim"), smoke_run(base / "image", lambda_feat="0", lambda_adv="0"),
            smoke_run(base / "wide", resolution="96"))


def test_rows_of_each_run_on_the_same_images(runs, tmp_path, capsys):
    deepsim, image, _ = runs
    out = tmp_path / "side.webp"
    assert main([str(deepsim), str(image), "--n", "3", "--out", str(out)]) == 0
    width, height = Image.open(out).size
    side = 64 + 2  # smoke resolution plus the grid's padding
    assert height == 3 * (side + 2) and width == 130 + 3 * side + 2  # originals + two runs; label column
    record = json.loads(out.with_suffix(".json").read_text())
    assert [row["method"] for row in record["rows"]] == ["deepsim", "image-loss"]
    assert all(row["step"] == 2 for row in record["rows"]) and record["commit"] and "--n 3" in record["command"]


def test_runs_of_different_resolution_are_refused(runs, tmp_path, capsys):
    deepsim, _, wide = runs
    assert main([str(deepsim), str(wide), "--out", str(tmp_path / "x.png")]) == 2
    assert "differ in resolution" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_step_shows_every_run_at_that_checkpoint(runs, tmp_path, capsys):
    deepsim, image, _ = runs
    out = tmp_path / "step1.png"
    assert main([str(deepsim), str(image), "--n", "2", "--step", "1", "--out", str(out)]) == 0
    assert [row["step"] for row in json.loads(out.with_suffix(".json").read_text())["rows"]] == [1, 1]
    assert main([str(deepsim), str(image), "--step", "7", "--out", str(tmp_path / "none.png")]) == 2
    assert "no checkpoint of step 7" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
