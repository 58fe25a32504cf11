"""`python -m repro.prewarp SRC OUT`: write the warped training set once, offline, as Caffe did.

Caffe's ILSVRC recipe ran `convert_imageset --resize_height=256 --resize_width=256` once: every image
decoded and warped (aspect ratio ignored) with OpenCV's default, bilinear `cv::resize`, then stored; training
only cropped. This command does the same into OUT, keeping the relative paths:

    OUT/<relative path>.jpg   the warped image, warp_size(R)×warp_size(R) (256 for R=227), JPEG quality 95
    OUT/train.txt             Caffe's list ("path label"), what `--set train_data=OUT/train.txt` reads
    OUT/prewarp.json          source, its listing sha256, warp, interpolation, quality, count, skipped files

Why JPEG and not raw uint8 shards (results/scale.md, per CPU-second of one core): decoding a pre-warped
256 px JPEG and cropping runs at ~920 images/s, so 3,000 images/s need ~3.3 cores, against ~17 cores for
full-size JPEGs warped online; uint8 shards only crop (~6,500 images/s) but take 197 KB per image — 252 GB
for ImageNet, over a GPU node's local disk (64 GiB on the one we can borrow) and its page cache — against
~37 GB of JPEGs, and they could not use the GPU's JPEG decoder (`gpu_decode`). Quality 95 keeps the
re-encoding error small (Caffe's default stored raw pixels: the one lossy step is ours, and said here).

Resumable: files already in OUT are kept; unreadable sources are reported and left out of train.txt.

The command is `python -m repro.prewarp` (a thin entry point, repro/prewarp.py, kept so that the name
the README and results/scale.md give still works); `python -m repro.data.prewarp` runs the same.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

from repro.data.caffe import UNREADABLE, decode_rgb, warp_like_caffe, warp_size
from repro.data.sources import index_text, listing, resolve_source
from repro.errors import cli, user_input

QUALITY = 95


def output_name(relative: str) -> str:
    """The pre-warped file's relative path: the source's, with a .jpg suffix unless it already is a JPEG."""
    stem, suffix = os.path.splitext(relative)
    return relative if suffix.lower() in (".jpg", ".jpeg") else stem + ".jpg"


def prewarp_one(task: tuple[str, str, int, int]) -> tuple[str, str | None]:
    """Warp one file (Caffe: bilinear) and write it as JPEG, atomically. Returns (relative, error or None)."""
    source, target, warp, quality = task
    if os.path.exists(target):
        return target, None
    try:
        rgb = decode_rgb(source)
    except UNREADABLE as err:
        return target, f"{source}: {err}"
    bgr = warp_like_caffe(rgb, warp)[:, :, ::-1]
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return target, f"{source}: OpenCV could not encode it"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    encoded.tofile(tmp)
    os.replace(tmp, target)
    return target, None


def prewarp(source: str | Path, out: str | Path, resolution: int = 227, quality: int = QUALITY,
            workers: int | None = None, progress: bool = True) -> dict:
    """Write the pre-warped set of `source` (asset name, folder or train.txt) into `out`; returns the meta
    written to out/prewarp.json."""
    started = time.perf_counter()
    files = listing(resolve_source(source))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    warp = warp_size(resolution)
    relatives = [files.relative(i) for i in range(len(files))]
    tasks = [(str(files.root / r), str(out / output_name(r)), warp, quality) for r in relatives]
    workers = workers or max(1, (os.cpu_count() or 1))
    skipped: list[str] = []
    with Pool(workers) as pool:
        for done, (_, error) in enumerate(pool.imap(prewarp_one, tasks, chunksize=64), start=1):
            if error:
                skipped.append(error)
                print(f"skipping unreadable image {error}", file=sys.stderr)
            if progress and (done % 10_000 == 0 or done == len(tasks)):
                print(f"{done}/{len(tasks)} images warped to {warp}×{warp}", file=sys.stderr)
    bad = {s.split(": ", 1)[0] for s in skipped}
    kept = [output_name(r) for r, task in zip(relatives, tasks) if task[0] not in bad]
    (out / "train.txt").write_text(index_text(kept), encoding="utf-8", errors="surrogateescape")
    meta = {"source": str(files.root), "source_listing_sha256": files.sha256, "warp": warp,
            "resolution": resolution, "interpolation": "cv2.INTER_LINEAR (Caffe convert_imageset)",
            "format": f"JPEG quality {quality}", "images": len(kept), "skipped": skipped,
            "listing_sha256": listing(out / "train.txt").sha256, "seconds": round(time.perf_counter() - started, 1),
            "command": " ".join(sys.argv)}
    (out / "prewarp.json").write_text(json.dumps(meta, indent=2))
    return meta


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.prewarp", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="shared asset name, image folder, or Caffe-style train.txt")
    parser.add_argument("out", help="folder to write (kept files are reused: the command resumes)")
    parser.add_argument("--resolution", type=int, default=227, help="training resolution R; warp = warp_size(R)")
    parser.add_argument("--quality", type=int, default=QUALITY, help="JPEG quality of the warped files")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = every core)")
    args = parser.parse_args(argv)
    with user_input(OSError):  # DataError (no such source, no images): a user error already
        meta = prewarp(args.source, args.out, args.resolution, args.quality, args.workers or None)
    print(f"{meta['images']} images in {args.out} ({len(meta['skipped'])} skipped, {meta['seconds']} s); "
          f"train with --set train_data={Path(args.out) / 'train.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
