"""The image pipeline on real assets and on broken files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from repro.assets import AssetError, asset_folder
from repro.data import DataError, ImageFolder, SeededSampler, list_images, load_images, make_loader, warp_size


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
