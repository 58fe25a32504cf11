"""Data at ImageNet scale, measured on a synthetic ImageNet made of hardlinks (inodes only, no copies).

    python -m bench.scale_data synth   [--root /tmp/synthetic-imagenet] [--per-class 1281]
    python -m bench.scale_data listing [--root …]     # walk, index, stat syscalls (strace), RSS; old vs new
    python -m bench.scale_data decode  [--work /tmp/scale-decode] [--images 300]
    python -m bench.scale_data loader  [--root …] [--work …] [--workers 1,2] [--batches 20]
    python -m bench.scale_data run     [--root …]     # reduced paper-pool5, 2 steps: RSS per process, first step
    (--out results/scale-data.json collects every part's figures with provenance.)

- synth: 1000 class folders × 1281 hardlinks to the 1000 real JPEGs of ../shared/assets/imagenet-1k-256
  (each 256×256), named like ILSVRC-2012's train folders (`<wnid>/<wnid>_<k>.JPEG`).
- listing: each way of listing runs in a fresh subprocess: the old one (`rglob` + `is_file()` + sorted
  `Path`s, what repro.data did before), the new walk that writes the index (`repro.data.listing` with no
  index yet), and the index read that every other rank and later run does. Per way: seconds, peak RSS of
  the process (ru_maxrss), and stat-family syscalls per file counted by `strace -f -c` in a second run.
- decode: images/s of one process on one core (cv2 and torch at 1 thread) for a training item at 227 px
  (decode, warp if needed, random crop, mirror → uint8 (3, 227, 227)), from three stores:
  raw = full-size JPEGs (500×375, q90: the assets up-scaled, a stand-in for ImageNet's ~400×350 originals,
  smoother than real photos so if anything cheaper to decode) warped online (this project's bicubic, and
  Caffe's bilinear); Caltech-101 originals (real photos, median 300×240) warped online; pre-warped =
  `python -m repro.prewarp` output of the raw set (256×256 JPEG q95); shard = the same warped pixels as one
  uint8 .npy (N, 256, 256, 3) memory-mapped, page cache warm. Cores for 3,000 images/s = 3000 / rate.
- loader: `repro.data.training_loader` (persistent workers, uint8 batches of 64 at 227 px) over the raw
  and pre-warped sets with 1 and 2 workers: images/s after the first batch, time to first batch (index
  present), RSS and PSS of the main process and of each worker.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# repro.data and repro.weights (torch, cv2) are imported inside the subcommands that read images or weights.
from repro import provenance as prov
from repro.config import make_config
from repro.errors import UsageError, cli, user_input

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
PYTHON = sys.executable


def provenance() -> dict:
    return prov.record(" ".join(sys.argv), dev="cpu", machine=platform.node(), python=platform.python_version(),
                       loadavg=os.getloadavg())


# ---- synth --------------------------------------------------------------------------------------------
def synth(root: Path, per_class: int) -> dict:
    sources = sorted((ASSETS / "imagenet-1k-256").iterdir())
    started = time.perf_counter()
    made = 0
    for c, source in enumerate(sources):
        wnid = source.stem
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            target = folder / f"{wnid}_{k}.JPEG"
            if not target.exists():
                os.link(sources[(c * per_class + k) % len(sources)], target)
                made += 1
    return {"root": str(root), "classes": len(sources), "per_class": per_class, "links_made": made,
            "seconds": round(time.perf_counter() - started, 1)}


# ---- listing ------------------------------------------------------------------------------------------
LISTERS = {  # (imports, the listing itself: timed, and its memory above the imports')
    "old (rglob + is_file + sorted Paths)": (
        "from pathlib import Path",
        "root = Path(ROOT); files = sorted(p for p in root.rglob('*') if p.is_file() and p.suffix.lower() in "
        "{'.jpg', '.jpeg', '.png'})"),
    "new walk, writes the index": ("from repro.data import listing", "files = listing(ROOT)"),
    "new, index read (other ranks, later runs)": ("from repro.data import listing", "files = listing(ROOT)"),
}


def _timed_listing(code: tuple[str, str], root: Path, cache: Path) -> dict:
    imports, timed = code
    script = (f"import resource, time, sys; ROOT = {str(root)!r}; {imports}; "
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.perf_counter(); "
              f"{timed}; print(len(files), time.perf_counter() - t, before, "
              "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = dict(os.environ, DEEPSIM_CACHE=str(cache), PYTHONPATH=str(REPO))
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, env=env, check=True).stdout.split()
    return {"files": int(out[0]), "seconds": round(float(out[1]), 2), "peak_rss_mb": round(int(out[3]) / 1024),
            "rss_after_imports_mb": round(int(out[2]) / 1024),
            "listing_mb": round((int(out[3]) - int(out[2])) / 1024), "_script": script, "_env": env}


STAT_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "fstatat64")


def _stat_calls(script: str, env: dict) -> int | None:
    """Stat-family syscalls of the script's process tree (`strace -f -c`), or None without strace."""
    if not Path("/usr/bin/strace").exists():
        return None
    summary = Path(env["DEEPSIM_CACHE"]) / "strace.txt"
    subprocess.run(["strace", "-f", "-c", "-e", f"trace={','.join(STAT_CALLS)}", "-o", str(summary), PYTHON, "-c",
                    script], capture_output=True, text=True, env=env, check=True)
    total = 0
    for line in summary.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in STAT_CALLS:
            total += int(parts[3])
    return total


def listing_bench(root: Path, cache: Path, strace: bool) -> dict:
    import shutil

    shutil.rmtree(cache / "listings", ignore_errors=True)
    out = {}
    for name, code in LISTERS.items():
        row = _timed_listing(code, root, cache)
        script, env = row.pop("_script"), row.pop("_env")
        if strace:
            # the same script on a one-image folder gives the interpreter's own stats (imports), subtracted
            tiny = cache / "tiny" / "n0"
            tiny.mkdir(parents=True, exist_ok=True)
            if not (tiny / "a.JPEG").exists():
                os.link(next(root.glob("*/*.JPEG")), tiny / "a.JPEG")
            if name.startswith("new walk"):  # the index exists now: walk again under strace
                shutil.rmtree(cache / "listings", ignore_errors=True)
            calls = _stat_calls(script, env)
            baseline = _stat_calls(script.replace(repr(str(root)), repr(str(tiny.parent))), env)
            row["stat_syscalls"] = calls
            row["stat_syscalls_baseline_one_file"] = baseline
            row["stat_syscalls_per_file"] = round((calls - baseline) / (row["files"] - 1), 5) if calls is not None else None
        out[name] = row
        print(name, row, flush=True)
    return out


# ---- decode -------------------------------------------------------------------------------------------
def _prepare_decode_sets(work: Path, images: int) -> dict[str, Path]:
    import cv2
    from PIL import Image

    from repro.data.prewarp import prewarp

    raw = work / "raw500"
    if not (raw / "train.txt").exists():
        raw.mkdir(parents=True, exist_ok=True)
        for source in sorted((ASSETS / "imagenet-1k-256").iterdir())[:images]:
            img = Image.open(source).convert("RGB").resize((500, 375), Image.BICUBIC)
            img.save(raw / source.name, quality=90)
        (raw / "train.txt").write_text("".join(f"{p.name} 0\n" for p in sorted(raw.glob("*.jpg"))))
    warped = work / "prewarped"
    if not (warped / "train.txt").exists():
        prewarp(raw / "train.txt", warped, resolution=227, progress=False)
    shard = work / "shard.npy"
    if not shard.exists():
        from repro.data import decode_rgb, listing

        files = listing(warped / "train.txt")
        array = np.lib.format.open_memmap(shard, mode="w+", dtype=np.uint8, shape=(len(files), 256, 256, 3))
        for i, path in enumerate(files):
            array[i] = decode_rgb(path)
        array.flush()
    caltech = work / "caltech.txt"
    if not caltech.exists():
        from repro.data import list_images

        files = list_images(ASSETS / "caltech101")[:: max(1, 9144 // images)][:images]
        caltech.write_text("".join(f"{f} 0\n" for f in files))
    del cv2
    return {"raw": raw / "train.txt", "prewarped": warped / "train.txt", "shard": shard, "caltech": caltech}


def decode_bench(work: Path, images: int, repeats: int = 2) -> dict:
    import cv2
    import torch

    from repro.data import ImageFolder, crop_uint8, decode_rgb, draw_crop, listing, warp_like_caffe

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    sets = _prepare_decode_sets(work, images)
    sizes = {name: int(np.mean([p.stat().st_size for p in listing(sets[name])])) for name in ("raw", "prewarped", "caltech")}

    def rate(item, n):
        # images per CPU-second of this single-threaded process: a per-core rate that other jobs on a shared
        # machine do not distort (the wall-clock rate is reported beside it)
        item(0)
        started, cpu = time.perf_counter(), time.process_time()
        for r in range(repeats):
            for i in range(n):
                item(i)
        walls.append(repeats * n / (time.perf_counter() - started))
        return repeats * n / (time.process_time() - cpu)

    results, walls = {}, []
    for name in ("raw", "caltech", "prewarped"):
        ds = ImageFolder(listing(sets[name]), 227, train=True, uint8=True)
        results[f"{name}: repro.data item (decode cv2, warp PIL bicubic if needed, crop)"] = rate(
            lambda i: ds[(i, i)], len(ds))
    raw_files = list(listing(sets["raw"]))

    def caffe_item(i):
        crop = draw_crop(i, 256, 227, True, True)
        return crop_uint8(warp_like_caffe(decode_rgb(raw_files[i]), 256), crop, 227)

    results["raw: Caffe's warp (decode cv2, cv2 bilinear, crop)"] = rate(caffe_item, len(raw_files))
    shard = np.load(sets["shard"], mmap_mode="r")
    for i in range(len(shard)):  # page cache warm, as the JPEG files are after their first pass
        shard[i].sum()
    results["shard: uint8 .npy memmap (crop only)"] = rate(
        lambda i: crop_uint8(shard[i], draw_crop(i, 256, 227, True, True), 227), len(shard))
    rows = {k: {"images_per_cpu_s": round(v), "cores_for_3000_per_s": round(3000 / v, 1), "wall_images_per_s": round(w)}
            for (k, v), w in zip(results.items(), walls)}
    for k, v in rows.items():
        print(f"{k}: {v}", flush=True)
    full = 1_281_167
    storage = {"mean_file_bytes": sizes, "imagenet_bytes_estimate_gb": {
        "prewarped_jpeg_q95": round(full * sizes["prewarped"] / 1e9, 1),
        "uint8_shards": round(full * 256 * 256 * 3 / 1e9, 1)}}
    print(storage)
    return {"per_core": rows, "storage": storage, "images": images}


# ---- loader -------------------------------------------------------------------------------------------
def _memory(pid: int) -> dict:
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return {"rss_mb": round(rss / 1024), "pss_mb": round(pss / 1024)}


def loader_bench(sources: dict[str, str], workers: list[int], batches: int, cache: Path) -> dict:
    """Each (source, workers) in a fresh subprocess (see `loader_child`)."""
    out = {}
    for name, source in sources.items():
        for n in workers:
            env = dict(os.environ, DEEPSIM_CACHE=str(cache), PYTHONPATH=str(REPO))
            result = subprocess.run([PYTHON, "-m", "bench.scale_data", "loader-child", "--source", source,
                                     "--workers", str(n), "--batches", str(batches)],
                                    capture_output=True, text=True, env=env, cwd=REPO)
            if result.returncode:
                raise RuntimeError(result.stderr[-3000:])
            row = json.loads(result.stdout.strip().splitlines()[-1])
            out[f"{name}, {n} worker(s)"] = row
            print(name, n, row, flush=True)
    return out


def loader_child(source: str, workers: int, batches: int) -> None:
    import torch

    from repro.data import infinite_batches, training_loader

    torch.set_num_threads(1)
    config = make_config("smoke", {"train_data": source, "resolution": 227, "batch_size": 64,
                                   "num_workers": workers, "data_cache": False})
    started = time.perf_counter()
    loader = training_loader(config, 0, 1, "cpu")
    batches_of = infinite_batches(loader)  # as the loop reads it: epochs after epochs (small sets wrap around)
    stream = ((batch for _, _, batch in batches_of))
    first = next(stream)
    first_batch_s = time.perf_counter() - started
    assert first.dtype == torch.uint8 and first.shape == (64, 3, 227, 227)
    workers_of = getattr(loader, "_iterator", None)
    pids = [w.pid for w in getattr(workers_of, "_workers", [])] or [os.getpid()]
    cpu0 = sum(_cpu_seconds(pid) for pid in pids)
    t = time.perf_counter()
    for _ in range(batches):
        next(stream)
    rate = batches * 64 / (time.perf_counter() - t)
    cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu0
    memory = {"main": _memory(os.getpid())}
    for i, worker in enumerate(getattr(workers_of, "_workers", [])):
        memory[f"worker{i}"] = _memory(worker.pid)
    # the workers run ahead by their prefetch (2 batches each): CPU time over the window is close to, not
    # exactly, the CPU time of the batches consumed in it
    print(json.dumps({"files": len(loader.dataset), "first_batch_s": round(first_batch_s, 2),
                      "wall_images_per_s": round(rate), "wall_images_per_s_per_worker": round(rate / max(1, workers)),
                      "images_per_worker_cpu_s": round(batches * 64 / max(cpu, 1e-9)), "memory": memory}))


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_bench(root: Path, cache: Path, fresh_index: bool) -> dict:
    """The reduced paper-pool5 run of tests/test_data_scale.py, on the full synthetic ImageNet: peak RSS of
    every process of the run (main, loader workers), time to the first step (stats.jsonl appears: log_every=1)
    and to the end; with `fresh_index` the listing index is removed first (the run walks the tree)."""
    import shutil
    import tempfile

    if fresh_index:
        shutil.rmtree(cache / "listings", ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "weights").exists():
        from repro.weights import cache_dir

        (cache / "weights").symlink_to(cache_dir() / "weights")
    run_dir = Path(tempfile.mkdtemp(prefix="scale-run-"))
    command = [PYTHON, "-m", "repro.train", "--preset", "paper-pool5", "--launcher", "local", "--no-progress",
               "--run-dir", str(run_dir / "run"),
               *[f"--set={kv}" for kv in ("encoder=alexnet", "comparator=alexnet", f"train_data={root}",
                                          "resolution=64", "generator_width=0.125", "discriminator_width=0.25",
                                          "batch_size=4", "steps=2", "verify_data=false", "eval_images=4",
                                          "num_workers=2", "log_every=1")]]
    env = dict(os.environ, DEEPSIM_CACHE=str(cache), PYTHONPATH=str(REPO))
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    tree_peak, tree_pss_peak, first_step = 0, 0, None
    while process.poll() is None:
        tree, tree_pss, pending = 0, 0, [process.pid]
        while pending:
            pid = pending.pop()
            try:
                memory = _memory(pid)
                names.setdefault(pid, "main" if pid == process.pid else f"child {len(names)}")
                peaks[pid] = max(peaks.get(pid, 0), memory["rss_mb"])
                tree += memory["rss_mb"]
                tree_pss += memory["pss_mb"]
                pending.extend(int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split())
            except (OSError, IndexError, ValueError):
                continue
        tree_peak, tree_pss_peak = max(tree_peak, tree), max(tree_pss_peak, tree_pss)
        if first_step is None and (run_dir / "run" / "stats.jsonl").exists():
            first_step = time.perf_counter() - started
        time.sleep(0.05)
    output = process.communicate()[0]
    if process.returncode:
        raise RuntimeError(output[-3000:])
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"fresh_index": fresh_index, "first_step_s": round(first_step, 1) if first_step else None,
            "total_s": round(time.perf_counter() - started, 1), "tree_peak_rss_sum_mb": tree_peak,
            "tree_peak_pss_sum_mb": tree_pss_peak, "peak_rss_mb_per_process": {names[pid]: mb for pid, mb in peaks.items()},
            "command": " ".join(command[1:])}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("synth", "listing", "decode", "loader", "loader-child", "run"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/synthetic-imagenet"))
    parser.add_argument("--per-class", type=int, default=1281)
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-decode"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scale-cache"), help="DEEPSIM_CACHE for the index")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--source", help="loader-child: train_data")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--out", type=Path, help="JSON file to merge this part's figures into")
    args = parser.parse_args(argv)
    with user_input(ValueError):  # --workers 1,x
        workers = [int(w) for w in args.workers.split(",")]
    if args.part == "loader-child":
        loader_child(args.source, workers[0], args.batches)
        return 0
    if args.part in ("listing", "loader", "run") and not args.root.is_dir():
        raise UsageError(f"{args.root} is not a folder: make the synthetic set first with "
                         f"`python -m bench.scale_data synth --root {args.root}`")
    with user_input(ValueError, OSError):  # an --out that is not a JSON record: refused before the work
        merged = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    started = time.perf_counter()
    if args.part == "synth":
        figures = synth(args.root, args.per_class)
    elif args.part == "listing":
        figures = listing_bench(args.root, args.cache, strace=not args.no_strace)
    elif args.part == "decode":
        figures = decode_bench(args.work, args.images)
    elif args.part == "run":
        figures = {"index present": run_bench(args.root, args.cache, fresh_index=False),
                   "no index yet (walks 1.28M files)": run_bench(args.root, args.cache, fresh_index=True)}
        print(json.dumps(figures, indent=1))
    else:
        _prepare_decode_sets(args.work, args.images)
        sources = {"synthetic ImageNet (1.28M files, 256 px JPEGs, no warp needed)": str(args.root),
                   "raw 500×375 JPEGs, warped online": str(args.work / "raw500" / "train.txt"),
                   "pre-warped 256 px JPEG q95": str(args.work / "prewarped" / "train.txt")}
        figures = loader_bench(sources, workers, args.batches, args.cache)
    record = {"provenance": dict(provenance(), wall_s=round(time.perf_counter() - started, 1)), "figures": figures}
    if args.out:
        merged[args.part] = record
        args.out.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(record["provenance"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
