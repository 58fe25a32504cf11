"""Figures are WebP at a quality that keeps textures; `repro.compress_figures` converts older PNG and JPEG figures
and the references to them, keeps the originals' sha256, and leaves recorded commands as they ran."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from repro.reporting.compress_figures import RECORD, compress_figures
from repro.data import list_images
from repro.grids import WEBP_QUALITY, existing_figure, write_grid


def real_images(assets, n=4, size=96):
    """(n, 3, size, size) RGB [0, 1]: the first evaluation images."""
    files = list_images(assets / "imagenet-1k-256")[:n]
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((size, size)), np.float32)
                                         / 255).permute(2, 0, 1) for f in files])


def test_write_grid_writes_a_webp_that_keeps_a_fine_texture(assets, tmp_path):
    torch.manual_seed(0)
    images = real_images(assets)
    # grey pixel noise, as a generator's textures: WebP 85 keeps it to ~0.014 mean error (80: ~0.018; the JPEG at
    # quality 90 figures were before: ~0.015)
    textured = (images + 0.1 * torch.randn(len(images), 1, 96, 96)).clamp(0, 1)
    write_grid(tmp_path / "grid.webp", images, textured, columns=2)
    written = Image.open(tmp_path / "grid.webp")
    assert written.format == "WEBP" and written.size == (4 * 98 + 2, 2 * 98 + 2)
    pixels = torch.from_numpy(np.asarray(written.convert("RGB"), np.float32) / 255).permute(2, 0, 1)
    tile = pixels[:, 2:98, 100:196]  # row 0: image 0 | its textured copy
    error = (tile - textured[0]).abs().mean().item()
    assert error < 0.016, f"quality {WEBP_QUALITY} should keep the texture: mean error {error:.3f}"
    write_grid(tmp_path / "grid.jpg", images, textured, columns=2)  # other suffixes keep their formats
    write_grid(tmp_path / "grid.png", images, textured, columns=2)
    assert Image.open(tmp_path / "grid.jpg").format == "JPEG" and Image.open(tmp_path / "grid.png").format == "PNG"


def write_figure(path, seed=0):
    """A small random figure in the format `path`'s suffix names; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pngs_and_jpegs_become_webp_their_references_follow_and_commands_stay(tmp_path):
    results = tmp_path / "results"
    run = results / "small-pool5" / "a"
    png_sha = write_figure(run / "eval" / "reencoding.png")
    jpeg_sha = write_figure(run / "grid-latest.jpg", seed=1)
    # the JPEG was a PNG once: the earlier conversion's record (beside the run, as repro.publish writes it)
    (run / RECORD).write_text(json.dumps({"what": "PNG figures re-encoded as JPEG", "quality": 90, "conversions": [
        {"command": "python -m repro.publish runs/a results/small-pool5/a", "commit": "abc", "files": [
            {"jpeg": "grid-latest.jpg", "png_sha256": "f" * 64, "png_bytes": 1000, "jpeg_bytes": 100}]}]}))
    command = "python -m repro.evaluate RUN --out runs/a/eval/reencoding.png"
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"figures": {"reencoding": "reencoding.png", "gone": "missing.png"}, "provenance": {"command": command}},
        indent=2))
    (run / "NOTE.md").write_text("![re](eval/reencoding.png) and `grid-latest.jpg`; ran `python -m repro.figures A "
                                 "--out eval/reencoding.png`; [x](missing.jpg), [r](results/small-pool5/a/grid-latest.jpg)\n")
    record = compress_figures(results, "python -m repro.compress_figures results")

    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.suffix in (".png", ".jpg", ".webp")) \
        == ["small-pool5/a/eval/reencoding.webp", "small-pool5/a/grid-latest.webp"]
    assert {Image.open(p).format for p in results.rglob("*.webp")} == {"WEBP"}
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["figures"] == {"reencoding": "reencoding.webp", "gone": "missing.png"}  # only what was converted
    assert metrics["provenance"]["command"] == command, "a recorded command stays as it ran"
    assert (run / "NOTE.md").read_text() == (
        "![re](eval/reencoding.webp) and `grid-latest.webp`; ran `python -m repro.figures A --out eval/reencoding.png`; "
        "[x](missing.jpg), [r](results/small-pool5/a/grid-latest.jpg)\n"), "that last path is the repository's results/"
    entries = {f["webp"]: f for f in record["conversions"][0]["files"]}
    assert entries["small-pool5/a/eval/reencoding.webp"]["sha256"] == png_sha
    assert entries["small-pool5/a/grid-latest.webp"]["sha256"] == jpeg_sha
    assert entries["small-pool5/a/grid-latest.webp"]["png_sha256"] == "f" * 64, "the PNG the JPEG was made from"
    assert "png_sha256" not in entries["small-pool5/a/eval/reencoding.webp"]
    assert all(f["webp_bytes"] > 0 and f["bytes"] > 0 for f in entries.values())
    assert json.loads((results / RECORD).read_text()) == record
    assert json.loads((run / RECORD).read_text())["conversions"][0]["files"][0]["jpeg"] == "grid-latest.jpg", \
        "an earlier record is history"
    assert compress_figures(results, "again") == {}, "nothing left to convert"
    assert len(json.loads((results / RECORD).read_text())["conversions"]) == 1


def test_a_second_conversion_is_appended_to_the_png_to_jpeg_record(tmp_path):
    (tmp_path / RECORD).write_text(json.dumps({"what": "PNG figures re-encoded as JPEG", "quality": 90, "conversions": [
        {"command": "python -m repro.compress_figures results", "commit": "abc", "files": [
            {"jpeg": "x.jpg", "png_sha256": "e" * 64, "png_bytes": 1000, "jpeg_bytes": 100}]}]}))
    write_figure(tmp_path / "x.jpg")
    record = compress_figures(tmp_path, "python -m repro.compress_figures results")
    first, second = record["conversions"]
    assert (first["format"], first["quality"], first["files"][0]["png_sha256"]) == ("JPEG", 90, "e" * 64)
    assert (second["format"], second["quality"]) == ("WebP", WEBP_QUALITY)
    assert second["files"][0]["png_sha256"] == "e" * 64, "the earliest original stays identified"


def test_a_figure_whose_webp_exists_stops_the_conversion_before_anything_changes(tmp_path):
    write_figure(tmp_path / "a.png")
    write_figure(tmp_path / "b.jpg")
    write_figure(tmp_path / "b.webp")
    with pytest.raises(ValueError, match="b.jpg would become .*b.webp"):
        compress_figures(tmp_path, "python -m repro.compress_figures x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "b.webp"]


def test_existing_figure_finds_a_run_s_figure_in_whichever_format_it_was_written(tmp_path):
    assert existing_figure(tmp_path / "grid-latest") is None
    write_figure(tmp_path / "grid-latest.png")
    assert existing_figure(tmp_path / "grid-latest.webp") == tmp_path / "grid-latest.png"
    write_figure(tmp_path / "grid-latest.jpg")
    assert existing_figure(tmp_path / "grid-latest") == tmp_path / "grid-latest.jpg"
    write_figure(tmp_path / "grid-latest.webp")
    assert existing_figure(tmp_path / "grid-latest") == tmp_path / "grid-latest.webp"


def test_publishing_a_run_written_before_webp_figures_commits_webp(tmp_path):
    from repro.reporting.publish import publish

    run = tmp_path / "runs" / "old"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"preset": "smoke"}))
    (run / "provenance.json").write_text(json.dumps({"command": "python -m repro.train --preset smoke"}))
    for name in ("grid-latest.jpg", "grids/step-00000001.png", "grids/step-00000002.jpg", "grids/step-00000003.jpg",
                 "eval/neighbours.jpg"):
        write_figure(run / name)
    (run / "eval" / "metrics.json").write_text(json.dumps({"figures": {"neighbours": "neighbours.jpg"}}))
    dest = publish(run, tmp_path / "results" / "smoke" / "old")
    assert not [p for p in dest.rglob("*") if p.suffix in (".png", ".jpg")]
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.webp")} == {
        "grid-latest.webp", "grids/step-00000001.webp", "grids/step-00000002.webp", "eval/neighbours.webp"}
    assert json.loads((dest / "eval" / "metrics.json").read_text())["figures"] == {"neighbours": "neighbours.webp"}
    assert (dest / RECORD).is_file()
