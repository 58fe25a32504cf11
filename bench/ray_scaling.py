"""Ray Train's data parallelism on this machine: images/s of `python -m repro.train` with 2 workers vs 1.

Each run is a real training run in its own process; images/s are read from its stats.jsonl (the median of
the logging windows after the first, which warms the caches) and its wall time from its provenance.json.
Efficiency compares like with like: one worker on one core against two workers on one core each. One
worker given every core (the launcher's default on a local runtime) and one plain process show what the
same machine does without data parallelism.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# repro.data (torch) is imported inside ray_scaling: --help and the record's readers do not load it.
from repro.assets import asset_folder

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def ray_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """The four runs on the first `args.scaling_images` Caltech-101 images (a small folder, so the caches are
    warm after a few steps) and their ratios."""
    from repro.data import list_images

    work = Path(tempfile.mkdtemp(prefix="deepsim-scaling-"))
    folder = work / "images"
    folder.mkdir()
    for i, path in enumerate(list_images(asset_folder("caltech101", verify=False))[: args.scaling_images]):
        (folder / f"{i:05d}{path.suffix}").symlink_to(path)
    steps, log_every = args.scaling_steps, args.scaling_log_every
    common = ["--preset", args.scaling_preset, "--no-progress", "--set", f"steps={steps}",
              "--set", f"log_every={log_every}", "--set", f"image_every={steps}",
              "--set", f"checkpoint_every={steps}", "--set", f"train_data={folder}", "--set", "verify_data=false"]
    runs = {
        "ray-1-worker": ["--launcher", "ray", "--num-workers", "1", "--cpus-per-worker", "1"],
        "ray-2-workers": ["--launcher", "ray", "--num-workers", "2", "--cpus-per-worker", "1"],
        "ray-1-worker-all-cores": ["--launcher", "ray", "--num-workers", "1"],
        "local-1-process": ["--launcher", "local", "--set", f"threads={os.cpu_count()}"],
    }
    out: dict[str, Any] = {"preset": args.scaling_preset, "steps": steps, "log_every": log_every,
                           "images": args.scaling_images, "runs": {}}
    for name, extra in runs.items():
        run_dir = work / name
        argv = [sys.executable, "-m", "repro.train", *extra, *common, "--run-dir", str(run_dir)]
        log.info("scaling: %s: %s", name, " ".join(argv[1:]))
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        stats_path, provenance_path = run_dir / "stats.jsonl", run_dir / "provenance.json"
        wall = json.loads(provenance_path.read_text()).get("wall_time_s") if provenance_path.exists() else None
        if done.returncode != 0 or not stats_path.exists():
            out["runs"][name] = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "wall_s": wall}
            continue
        rows = [json.loads(line) for line in stats_path.read_text().splitlines() if line.strip()]
        steady = [r["images_per_s"] for r in rows[1:]] or [r["images_per_s"] for r in rows]  # first window warms up
        out["runs"][name] = {"command": "python -m repro.train " + " ".join(extra + common), "wall_s": wall,
                             "images_per_s_windows": [round(r["images_per_s"], 2) for r in rows],
                             "images_per_s": round(statistics.median(steady), 2)}
        log.info("  %s", out["runs"][name])
    one, two = (out["runs"].get(k, {}).get("images_per_s") for k in ("ray-1-worker", "ray-2-workers"))
    local = out["runs"].get("local-1-process", {}).get("images_per_s")
    out["efficiency_2_vs_1_workers"] = round(two / (2 * one), 3) if one and two else None
    out["speedup_2_vs_1_workers"] = round(two / one, 3) if one and two else None
    out["ray_2_workers_vs_local_process"] = round(two / local, 3) if local and two else None
    every = out["runs"].get("ray-1-worker-all-cores", {}).get("images_per_s")
    out["ray_2_workers_vs_1_worker_all_cores"] = round(two / every, 3) if every and two else None
    return out
