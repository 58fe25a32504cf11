"""A short CPU run of the paper preset (width and batch reduced) on a synthetic ImageNet-layout folder stays
under a stated memory bound, loader workers included (results/scale.md has the 1.28M-file figures)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from repro.data import cache_dir, list_images

REPO = Path(__file__).resolve().parents[1]
# Bounds on the memory of the run (main process + 2 loader workers): the summed PSS of its processes and the
# RSS of the largest one. Measured (results/scale.md): 666 MB PSS / 897 MB largest RSS on these 20,000 files;
# 915 / 979 MB on the 1.28M-file synthetic ImageNet (bench/scale_data.py run), where the main process holds
# ≈ 0.5 GB of torch/cv2 libraries and each worker ≈ 0.6 GB RSS, mostly pages shared with the main process.
TREE_PSS_BOUND_MB = 1200
PROCESS_RSS_BOUND_MB = 1300


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(PSS summed, largest RSS) over `pid` and all its descendants, MB (from /proc). PSS shares each page
    among the processes that map it, so the sum is the memory the run really holds; summed RSS would count
    the torch libraries and the forked listing once per loader worker."""
    pss = rss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss = max(rss, int(line.split()[1]))
            with open(f"/proc/{current}/task/{current}/children") as f:
                pending.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return pss / 1024, rss / 1024


def synthetic_imagenet(root: Path, sources: list[Path], classes: int = 200, per_class: int = 100) -> Path:
    """The ILSVRC layout (class folders of `<wnid>_<k>.JPEG`) as hardlinks to real JPEGs: no copies."""
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            os.link(sources[(c * per_class + k) % len(sources)], folder / f"n{c:08d}_{k}.JPEG")
    return root


# Bytes per file of the listing, as tracemalloc counts the Python and numpy allocations of the call (exact,
# independent of the machine's load). Measured on 20,000 files: the walk holds 49 B/file (train.txt text +
# two int64 offsets) at a peak of 99; the index read the same; training_loader with its first epoch 100 held,
# 108 peak. The path this replaced (`sorted(rglob)` of Path objects) holds 413 B/file at a peak of 539, the
# 636 MB of results/scale.md at 1.28M files.
LISTING_HELD_BOUND_B, LISTING_PEAK_BOUND_B = 150, 200


def bytes_per_file(make, files: int) -> tuple[float, float]:
    """(held, peak) bytes per file allocated by `make()` (what it returns is held until measured)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        kept = make()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return held / files, peak / files


def test_the_listing_holds_bytes_per_file_not_a_python_object_per_file(tmp_path, assets, monkeypatch):
    """The per-file bound separates the listing from the old Path list by ~3×, so a return to a Python object
    per file fails it (the whole-run bound below could not see it: 20,000 files × 400 B is 8 MB)."""
    from repro.config import make_config
    from repro.data import listing, training_loader

    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    root = synthetic_imagenet(tmp_path / "synthetic-imagenet", list_images(assets / "imagenet-1k-256"))
    files = 20_000
    config = make_config("smoke", {"train_data": str(root), "num_workers": "0", "data_cache": "false",
                                   "verify_data": "false"})

    def loader_and_first_epoch():
        loader = training_loader(config, 0, 1, "cpu")
        order = iter(loader.sampler)
        next(order)  # the epoch's permutation and crop seeds are drawn
        return loader, order

    measured = {"walk": bytes_per_file(lambda: listing(root), files),
                "index read": bytes_per_file(lambda: listing(root), files),
                "training_loader": bytes_per_file(loader_and_first_epoch, files)}
    assert len(listing(root)) == files
    for way, (held, peak) in measured.items():
        assert held < LISTING_HELD_BOUND_B and peak < LISTING_PEAK_BOUND_B, (way, held, peak)
    old_held, old_peak = bytes_per_file(lambda: sorted(p for p in root.rglob("*") if p.is_file()), files)
    assert old_held > 2 * LISTING_HELD_BOUND_B and old_peak > 2 * LISTING_PEAK_BOUND_B, \
        "the bound must fail the Path-per-file listing it guards against"


@pytest.mark.slow
def test_reduced_paper_run_stays_under_the_memory_bound(tmp_path, assets):
    """The whole run (main process + 2 loader workers) on 20,000 files; the listing's own share is bounded
    per file by the test above."""
    root = synthetic_imagenet(tmp_path / "synthetic-imagenet", list_images(assets / "imagenet-1k-256"))
    command = [sys.executable, "-m", "repro.train", "--preset", "paper-pool5", "--launcher", "local",
               "--no-progress", "--run-dir", str(tmp_path / "run"),
               *[f"--set={kv}" for kv in ("encoder=alexnet", "comparator=alexnet", f"train_data={root}",
                                          "resolution=64", "generator_width=0.125", "discriminator_width=0.25",
                                          "batch_size=4", "steps=2", "verify_data=false", "eval_images=4",
                                          "num_workers=2")]]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights").symlink_to(cache_dir() / "weights")  # the pretrained AlexNet, shared
    env = dict(os.environ, DEEPSIM_CACHE=str(tmp_path / "cache"))  # a private listing index
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = largest = 0.0

    def watch():
        nonlocal peak, largest
        while process.poll() is None:
            pss, rss = tree_memory_mb(process.pid)
            peak, largest = max(peak, pss), max(largest, rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    output, _ = process.communicate(timeout=600)
    watcher.join()
    assert process.returncode == 0, output[-3000:]
    assert (tmp_path / "run" / "grid-latest.webp").exists()
    assert any((tmp_path / "cache" / "listings").glob("*.txt"))  # the index every rank reads was written
    print(f"peak PSS of the run's processes: {peak:.0f} MB; largest RSS of one: {largest:.0f} MB")
    assert 300 < peak < TREE_PSS_BOUND_MB, f"peak PSS of the run's processes {peak:.0f} MB"
    assert largest < PROCESS_RSS_BOUND_MB, f"peak RSS of one process {largest:.0f} MB"


def test_resource_plan_counts_the_checkpoint_and_the_listing(tmp_path, assets, monkeypatch):
    import torch

    from repro.config import make_config
    from repro.models import build_parts
    from repro.plan import describe, resource_plan

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights").symlink_to(cache_dir() / "weights")
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "train" / "n0"
    root.mkdir(parents=True)
    for source in list_images(assets / "imagenet-1k-256")[:5]:
        os.link(source, root / source.name)
    config = make_config("smoke", {"train_data": str(tmp_path / "train"), "data_cache": "true",
                                   "data_cache_mb": "0.05", "discriminator_features": "true"})
    plan = resource_plan(config, world_size=2)
    parts = build_parts(config, torch.device("cpu"))  # the real nets: the plan's meta-device count must match
    trained = [p for m in (parts.model, parts.discriminator) for p in m.parameters() if p.requires_grad]
    assert plan["checkpoint"]["bytes"] == 3 * 4 * sum(p.numel() for p in trained)  # weights + Adam m, v; fp32
    assert plan["listing"]["files"] == 5 and plan["listing"]["index"].startswith(str(tmp_path / "cache"))
    needed = 5 * 72 * 72 * 3 / 2**20  # 0.074 MB of warped images, over the 0.05 MB budget
    assert plan["cache"] == {"enabled": True, "budget_mb": 0.05, "needed_mb": 0.07,
                             "per_rank_mb": 0.05, "fits": False}
    assert plan["loader"]["batch_per_rank"] == 2 and plan["loader"]["workers_per_rank"] == 0
    assert "5 images" in describe(plan)
