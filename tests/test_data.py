"""The image pipeline on real assets and on broken files."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from repro.assets import AssetError, asset_folder
from repro.config import ConfigError, make_config
from repro.data import datasets, sources
from repro.data.caffe import decode_rgb, warp_like_caffe, warp_size
from repro.data.datasets import EncodedFolder, ImageFolder
from repro.data.loaders import (GpuDecoded, SeededSampler, infinite_batches, load_images, make_loader,
                                require_one_batch, training_loader)
from repro.data.prewarp import prewarp
from repro.data.sources import DataError, index_path, list_images, listing, listing_sha256

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def small_folder(tmp_path, assets):
    """A few real Caltech-101 images (one greyscale among them), plus nested folders and a PNG."""
    src = list_images(assets / "caltech101" / "pizza")[:5]
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, f in enumerate(src):
        shutil.copy(f, tmp_path / ("a" if i % 2 else "a/b") / f"img{i}.jpg")
    Image.open(src[0]).convert("L").save(tmp_path / "grey.png")
    return tmp_path


def test_recursive_listing_and_greyscale(small_folder):
    ds = ImageFolder(small_folder, resolution=64, train=False)
    assert len(ds) == 6
    assert list(ds.files) == sorted(p for p in small_folder.rglob("*") if p.is_file())  # files, folders interleaved
    grey = ds[[str(f) for f in ds.files].index(str(small_folder / "grey.png"))]
    assert grey.shape == (3, 64, 64) and torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_train_crops_are_deterministic_and_worker_independent(small_folder):
    ds = ImageFolder(small_folder, resolution=64, train=True)
    a = next(iter(make_loader(ds, batch_size=4, seed=3, num_workers=0)))
    b = next(iter(make_loader(ds, batch_size=4, seed=3, num_workers=2)))
    c = next(iter(make_loader(ds, batch_size=4, seed=4, num_workers=0)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 3, 64, 64) and 0.0 <= a.min() and a.max() <= 1.0


def test_eval_crop_is_central(small_folder):
    ds = ImageFolder(small_folder, resolution=227, train=False)
    assert warp_size(227) == 256
    full = np.asarray(Image.open(ds.files[0]).convert("RGB").resize((256, 256), Image.BICUBIC))
    expected = torch.from_numpy(full[14:241, 14:241].copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(ds[0], expected)


def test_sampler_shards_cover_the_epoch():
    shards = [list(SeededSampler(10, seed=0, rank=r, world_size=3)) for r in range(3)]
    indices = sorted(i for shard in shards for i, _ in shard)
    assert set(indices) == set(range(10)) and len(indices) == 12  # padded to equal shards


def test_corrupt_images_are_reported_and_skipped(small_folder, caplog):
    good = sorted(small_folder.rglob("*.jpg"))[0]
    (small_folder / "truncated.jpg").write_bytes(good.read_bytes()[:2000])
    (small_folder / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    ds = ImageFolder(small_folder, resolution=64, train=True)
    batches = [b for b in make_loader(ds, batch_size=2, seed=0, num_workers=0, drop_last=False)]
    assert sum(len(b) for b in batches) == len(ds)  # no crash mid-epoch, every slot filled
    assert {p.name for p in ds.bad} == {"truncated.jpg", "garbage.jpg"}
    assert "truncated.jpg" in caplog.text and "garbage.jpg" in caplog.text


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="holds no"):
        ImageFolder(tmp_path, resolution=64)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "nope", resolution=64)
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.raises(DataError, match="cannot read image .*bad.jpg"):
        load_images([tmp_path / "bad.jpg"], 64)


def test_altered_asset_folder_is_detected(tmp_path, assets, monkeypatch):
    fake = tmp_path / "imagenet-1k-256"
    fake.mkdir()
    for f in list_images(assets / "imagenet-1k-256")[:3]:
        shutil.copy(f, fake)
    monkeypatch.setenv("DEEPSIM_ASSETS", str(tmp_path))
    with pytest.raises(AssetError, match="was altered"):
        asset_folder("imagenet-1k-256")
    monkeypatch.setenv("DEEPSIM_ASSETS", str(tmp_path / "missing"))
    with pytest.raises(AssetError, match="not found"):
        asset_folder("imagenet-1k-256")


def test_real_evaluation_set_verifies(assets):
    folder = asset_folder("imagenet-1k-256")
    assert len(list_images(folder)) == 1000


# ---- ImageNet-scale data: listing, index, memory budget, pre-warped set, uint8 loader -----------------
@pytest.fixture()
def classes(tmp_path, assets, monkeypatch):
    """Three class folders of 12 hardlinked real JPEGs each (the synthetic-ImageNet layout, small); the
    listing index goes to a private cache."""
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    sources = list_images(assets / "imagenet-1k-256")[:36]
    root = tmp_path / "train"
    for i, src in enumerate(sources):
        folder = root / f"n{i // 12:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(src, folder / f"n{i // 12:08d}_{i}.JPEG")
    return root


def test_listing_walks_once_without_a_stat_per_file(classes, monkeypatch):
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a[0]) or real_stat(*a, **k))
    files = listing(classes)
    assert len(files) == 36 and files[0] == classes / "n00000000" / "n00000000_0.JPEG"
    on_files = [c for c in calls if str(c).endswith(".JPEG")]
    assert not on_files and len(calls) < 15, calls  # the folders (their mtimes) and the index, no image file
    calls.clear()
    assert list_images(classes) == sorted(classes.rglob("*.JPEG"))  # the order sorted(Path) always gave
    assert not [c for c in calls if str(c).endswith(".JPEG")]


def test_index_is_caffe_train_txt_shared_and_refreshed(classes, monkeypatch):
    first = listing(classes)
    index = index_path(classes)
    assert first.index == index and index.read_text().splitlines()[:2] == [
        "n00000000/n00000000_0.JPEG 0", "n00000000/n00000000_1.JPEG 0"]
    assert index.read_text().splitlines()[-1].endswith(" 2")  # labels number the sorted class folders
    assert json.loads(index.with_suffix(".json").read_text())["count"] == 36
    # another rank / a later run reads the index instead of walking the tree
    monkeypatch.setattr(sources, "scan_images", lambda root: pytest.fail("walked the tree again"))
    again = listing(classes)
    assert list(again) == list(first) and again.sha256 == first.sha256 == listing_sha256(classes)
    monkeypatch.undo()
    monkeypatch.setenv("DEEPSIM_CACHE", str(index.parents[1]))
    os.link(first[0], classes / "n00000001" / "extra.JPEG")  # the folder's mtime changes: walk again
    changed = listing(classes)
    assert len(changed) == 37 and changed.sha256 != first.sha256


def test_caffe_train_txt_is_accepted_as_train_data(classes):
    (classes / "train.txt").write_text("n00000002/n00000002_30.JPEG 2\nn00000000/n00000000_3.JPEG 0\n")
    files = listing(classes / "train.txt")
    assert list(files) == [classes / "n00000002/n00000002_30.JPEG", classes / "n00000000/n00000000_3.JPEG"]
    ds = ImageFolder(files, resolution=64, train=False)
    assert ds[1].shape == (3, 64, 64)
    (classes / "wrong.txt").write_text("missing/x.JPEG 0\n")
    with pytest.raises(DataError, match="first image .*missing/x.JPEG does not exist"):
        listing(classes / "wrong.txt")


def test_cache_stays_within_its_memory_budget(classes, caplog):
    image_bytes = warp_size(64) ** 2 * 3  # 72 × 72 × 3
    budget_mb = 10 * image_bytes / 2**20  # room for 10 of the 36 images
    with caplog.at_level(logging.WARNING):
        ds = ImageFolder(classes, resolution=64, cache=True, cache_mb=budget_mb, uint8=True)
    assert "over data_cache_mb" in caplog.text and "only the first 10" in caplog.text
    for i in range(len(ds)):
        ds[(i, i)]
    assert ds._store.nbytes <= budget_mb * 2**20 and ds.cached_bytes() == 10 * image_bytes
    assert torch.equal(ds[(3, 7)], ImageFolder(classes, resolution=64, uint8=True)[(3, 7)])  # cached = decoded
    roomy = ImageFolder(classes, resolution=64, cache=True, uint8=True)
    for i in range(len(roomy)):
        roomy[i]
    assert roomy.cached_bytes() == 36 * image_bytes  # under the default budget: everything cached
    # the budget is shared by the processes that decode (each loader worker keeps its own cache)
    loader = make_loader(ImageFolder(classes, resolution=64, cache=True, cache_mb=budget_mb), 4, num_workers=2)
    assert loader.dataset.cache_capacity() == 5
    with pytest.raises(ConfigError, match="data_cache_mb"):
        make_config("smoke", {"data_cache_mb": -1})
    for tap in ("pool5", "fc6", "fc7", "fc8"):  # the paper presets train on ImageNet: no cache
        assert not make_config(f"paper-{tap}", {"train_data": str(classes), "encoder": "alexnet",
                                                "comparator": "alexnet", "layer": "pool5"}).data_cache


def test_shared_cache_is_one_copy_per_node_for_every_process(classes, tmp_path, monkeypatch):
    """Tune trials on a node map one file of warped images (issue 15): a second trial decodes nothing."""
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path))
    image_bytes = warp_size(64) ** 2 * 3
    budget_mb = 10 * image_bytes / 2**20  # the node's budget, not divided by processes
    first = ImageFolder(classes, resolution=64, cache=True, cache_mb=budget_mb, uint8=True, shared=True)
    items = [first[(i, i)] for i in range(len(first))]
    (path,) = (tmp_path / "warped").iterdir()
    assert path.stat().st_size == 10 * (image_bytes + 1)
    assert make_loader(ImageFolder(classes, resolution=64, cache=True, cache_mb=budget_mb, shared=True), 4,
                       num_workers=2).dataset.cache_capacity() == 10

    decoded = []
    real = datasets.load_warped
    monkeypatch.setattr(datasets, "load_warped", lambda f, w: decoded.append(f) or real(f, w))
    second = ImageFolder(classes, resolution=64, cache=True, cache_mb=budget_mb, uint8=True, shared=True)
    assert all(torch.equal(second[(i, i)], items[i]) for i in range(len(second)))
    assert len(decoded) == len(second) - 10  # only the images past the node's budget
    assert make_config("smoke").data_cache_shared is False


def test_training_loader_gives_this_ranks_uint8_shard(classes):
    config = make_config("smoke", {"train_data": str(classes), "batch_size": 4, "num_workers": 1})
    shards = [training_loader(config, rank, 2) for rank in (0, 1)]
    assert shards[0].persistent_workers and shards[0].batch_size == 2
    batch = next(iter(shards[0]))
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 64, 64)
    float_items = ImageFolder(classes, resolution=64, train=True)
    expected = torch.stack([float_items[item] for item in list(shards[0].sampler)[:2]])
    assert torch.equal(batch.float() / 255, expected)  # the float path, to the bit
    seen = [{i for i, _ in loader.sampler} for loader in shards]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 36


def test_prewarp_writes_caffe_bilinear_jpegs_once(classes, tmp_path):
    out = tmp_path / "warped"
    meta = prewarp(classes, out, resolution=64, workers=2, progress=False)
    assert meta["images"] == 36 and meta["warp"] == 72 and "INTER_LINEAR" in meta["interpolation"]
    rel = "n00000001/n00000001_13.JPEG"
    written = decode_rgb(out / rel)
    source = decode_rgb(classes / rel)
    bilinear = warp_like_caffe(source, 72).astype(float)
    bicubic = np.asarray(Image.fromarray(source).resize((72, 72), Image.BICUBIC), dtype=float)
    _, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(bilinear.astype(np.uint8)[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert np.array_equal(written, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])  # warp, then JPEG q95
    # Caffe's bilinear, not this project's online bicubic
    assert np.abs(written - bilinear).mean() < np.abs(written - bicubic).mean()
    assert (out / "train.txt").read_text() == index_path(classes).read_text()  # same list, same labels
    stamp = (out / rel).stat().st_mtime_ns
    prewarp(classes, out, resolution=64, workers=1, progress=False)
    assert (out / rel).stat().st_mtime_ns == stamp  # resumable: kept files are not written again
    ds = ImageFolder(out / "train.txt", resolution=64, train=False, uint8=True)
    assert torch.equal(ds[list(ds.files).index(out / rel)], torch.from_numpy(written[4:68, 4:68].transpose(2, 0, 1).copy()))  # no re-warp


def test_python_m_repro_prewarp_is_still_the_command(classes, tmp_path):
    """The command the README gives runs the package's prewarp (repro/prewarp.py is a thin entry point)."""
    out = tmp_path / "warped"
    done = subprocess.run([sys.executable, "-m", "repro.prewarp", str(classes), str(out), "--resolution", "64",
                           "--workers", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"36 images in {out}" in done.stdout and f"train_data={out / 'train.txt'}" in done.stdout
    assert (out / "train.txt").read_text() == index_path(classes).read_text()
    assert json.loads((out / "prewarp.json").read_text())["warp"] == 72


def test_gpu_decode_path_matches_cpu_decode(classes, tmp_path):
    """The nvJPEG path's logic, run with torchvision's CPU decoder (no GPU here)."""
    out = tmp_path / "warped"
    prewarp(classes, out, resolution=64, workers=1, progress=False)
    files = listing(out / "train.txt")
    encoded = make_loader(EncodedFolder(files, resolution=64, train=True), 4, seed=1, num_workers=0)
    decoded = make_loader(ImageFolder(files, resolution=64, train=True, uint8=True), 4, seed=1, num_workers=0)
    gpu = next(iter(GpuDecoded(encoded, "cpu", warp=72, resolution=64)))
    cpu = next(iter(decoded))
    assert gpu.dtype == torch.uint8 and gpu.shape == cpu.shape == (4, 3, 64, 64)
    assert (gpu.int() - cpu.int()).abs().float().mean() < 1.0  # two libjpeg-turbo builds: equal or ±1
    config = make_config("smoke", {"train_data": str(classes), "gpu_decode": "true"})
    with pytest.raises(DataError, match="needs a CUDA device"):
        training_loader(config, 0, 1, "cpu")


def test_persistent_workers_give_the_in_process_stream_across_epochs(classes):
    from itertools import islice

    def stream(workers, skip, n):
        config = make_config("smoke", {"train_data": str(classes), "batch_size": 8, "num_workers": workers})
        loader = training_loader(config, 0, 1)
        return [batch for _, _, batch in islice(infinite_batches(loader, start_epoch=1, skip=skip), n)]

    full = stream(0, skip=0, n=8)  # 36 images / 8 = 4 batches an epoch: epochs 1 and 2
    resumed = stream(1, skip=2, n=6)  # a run resumed after 2 batches of epoch 1, one persistent worker
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed)) and len(resumed) == 6
    assert not any(torch.equal(full[i], full[i + 4]) for i in range(4))  # epoch 2 is reshuffled


def test_fewer_images_than_one_batch_is_an_error_not_an_endless_wait(small_folder):
    """The loader drops an incomplete batch: with fewer images than one batch every epoch is empty, and
    `infinite_batches` must say so instead of looping forever."""
    config = make_config("smoke", {"train_data": str(small_folder), "batch_size": 8})  # 6 images
    with pytest.raises(DataError, match=r"holds 6 images, fewer than one batch of 8"):
        training_loader(config)
    with pytest.raises(DataError, match=r"holds 5 images, fewer than one batch of 8 over 2 workers \(4 each\)"):
        require_one_batch(list_images(small_folder)[:5], small_folder, 8, world_size=2)  # shards of 3
    require_one_batch(list_images(small_folder)[:5], small_folder, 6, world_size=2)  # 3 each: fine
    loader = make_loader(ImageFolder(small_folder, 64, uint8=True), batch_size=8, num_workers=0)
    batches = infinite_batches(loader)
    with pytest.raises(DataError, match=r"gives no batch of 8"):
        next(batches)
    assert next(infinite_batches(make_loader(ImageFolder(small_folder, 64, uint8=True), batch_size=6,
                                             num_workers=0)))[2].shape[0] == 6  # exactly one batch: fine
