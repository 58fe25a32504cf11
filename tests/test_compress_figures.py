"""Figures are JPEG at a quality that keeps textures; `repro.compress_figures` converts older PNG figures and
the references to them, and leaves recorded commands as they ran."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from PIL import Image

from repro.compress_figures import RECORD, compress_figures
from repro.data import list_images
from repro.figures import JPEG_QUALITY, write_grid


def real_images(assets, n=4, size=96):
    """(n, 3, size, size) RGB [0, 1]: the first evaluation images."""
    files = list_images(assets / "imagenet-1k-256")[:n]
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((size, size)), np.float32)
                                         / 255).permute(2, 0, 1) for f in files])


def test_write_grid_writes_a_jpeg_that_keeps_a_fine_texture(assets, tmp_path):
    torch.manual_seed(0)
    images = real_images(assets)
    # grey pixel noise, as a generator's textures: quality 90 keeps it to ~0.015 mean error, 85 to ~0.021
    textured = (images + 0.1 * torch.randn(len(images), 1, 96, 96)).clamp(0, 1)
    write_grid(tmp_path / "grid.jpg", images, textured, columns=2)
    written = Image.open(tmp_path / "grid.jpg")
    assert written.format == "JPEG" and written.size == (4 * 98 + 2, 2 * 98 + 2)
    pixels = torch.from_numpy(np.asarray(written, np.float32) / 255).permute(2, 0, 1)
    tile = pixels[:, 2:98, 100:196]  # row 0: image 0 | its textured copy
    error = (tile - textured[0]).abs().mean().item()
    assert error < 0.018, f"quality {JPEG_QUALITY} should keep the texture: mean error {error:.3f}"
    write_grid(tmp_path / "grid.png", images, textured, columns=2)  # a .png path stays lossless
    assert Image.open(tmp_path / "grid.png").format == "PNG"


def write_png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pngs_become_jpegs_and_their_references_follow_but_commands_stay(tmp_path):
    run = tmp_path / "results" / "small-pool5" / "a"
    sha = write_png(run / "eval" / "reencoding.png")
    write_png(run / "grid-latest.png", seed=1)
    command = "python -m repro.evaluate RUN --out runs/a/eval/reencoding.png"
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"figures": {"reencoding": "reencoding.png", "gone": "missing.png"}, "provenance": {"command": command}},
        indent=2))
    (run / "NOTE.md").write_text("![re](eval/reencoding.png) and `grid-latest.png`; "
                                 "ran `python -m repro.figures A --out eval/reencoding.png`; [x](missing.png)\n")
    record = compress_figures(tmp_path / "results", "python -m repro.compress_figures results")

    assert sorted(p.name for p in (tmp_path / "results").rglob("*.??g")) == ["grid-latest.jpg", "reencoding.jpg"]
    assert Image.open(run / "eval" / "reencoding.jpg").format == "JPEG"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["figures"] == {"reencoding": "reencoding.jpg", "gone": "missing.png"}  # only what was converted
    assert metrics["provenance"]["command"] == command, "a recorded command stays as it ran"
    assert (run / "NOTE.md").read_text() == ("![re](eval/reencoding.jpg) and `grid-latest.jpg`; ran `python -m "
                                             "repro.figures A --out eval/reencoding.png`; [x](missing.png)\n")
    entry = {f["jpeg"]: f for f in record["conversions"][0]["files"]}["small-pool5/a/eval/reencoding.jpg"]
    assert entry["png_sha256"] == sha and entry["jpeg_bytes"] > 0
    assert json.loads((tmp_path / "results" / RECORD).read_text()) == record
    assert compress_figures(tmp_path / "results", "again") == {}, "nothing left to convert"
    assert len(json.loads((tmp_path / "results" / RECORD).read_text())["conversions"]) == 1


def test_publishing_a_run_written_before_jpeg_figures_commits_jpegs(tmp_path):
    from repro.publish import publish

    run = tmp_path / "runs" / "old"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"preset": "smoke"}))
    (run / "provenance.json").write_text(json.dumps({"command": "python -m repro.train --preset smoke"}))
    for name in ("grid-latest.png", "grids/step-00000001.png", "grids/step-00000002.png", "eval/neighbours.png"):
        write_png(run / name)
    (run / "eval" / "metrics.json").write_text(json.dumps({"figures": {"neighbours": "neighbours.png"}}))
    dest = publish(run, tmp_path / "results" / "smoke" / "old")
    assert not list(dest.rglob("*.png"))
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")} == {
        "grid-latest.jpg", "grids/step-00000001.jpg", "eval/neighbours.jpg"}
    assert json.loads((dest / "eval" / "metrics.json").read_text())["figures"] == {"neighbours": "neighbours.jpg"}
    assert (dest / RECORD).is_file()
