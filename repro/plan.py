"""The resource plan of a run, for `python -m repro.train --dry-run`: what the data, the loader and the
checkpoints will cost before anything starts. `resource_plan(config, world_size)` → a dict; `describe` → text.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from repro.config import Config
from repro.data import default_workers, listing, resolve_source, warp_size
from repro.devices import DeviceError, pick_device
from repro.loop import Session, Trainer, batch_plan
from repro.models import build_parts

# Networks whose weights only the user has: their architecture's seeded-random twin has the same shapes.
SAME_SHAPES = {"caffenet": "caffenet-random", "videonet": "caffenet-random", "alexnet": "alexnet-random",
               "alexnet-tv": "alexnet-random"}


def trained_parameters(config: Config) -> dict[str, int]:
    """Parameters that training updates (G, or the VAE/autoencoder, and D), counted on the meta device: no
    weights are read and no memory is allocated."""
    encoder = SAME_SHAPES.get(config.encoder)
    # the comparator trains nothing: any stand-in counts the same (an ONNX one's file is not read here)
    comparator = SAME_SHAPES.get(config.comparator) or "alexnet-random"
    shapes_only = dataclasses.replace(
        config, encoder=encoder or config.encoder, encoder_weights="" if encoder else config.encoder_weights,
        comparator=comparator, comparator_weights="",
        comparator_tap=config.comparator_tap if comparator == SAME_SHAPES.get(config.comparator) else "pool5",
        device="cpu", compile=False, channels_last=False,
        init_generator="")  # a warm start's file names the real encoder, which the stand-in is not; shapes are the same
    with torch.device("meta"):
        parts = build_parts(shapes_only, torch.device("meta"))
    count = {"model": sum(p.numel() for p in parts.model.parameters() if p.requires_grad)}
    if parts.discriminator is not None:
        count["discriminator"] = sum(p.numel() for p in parts.discriminator.parameters() if p.requires_grad)
    return count


def resource_plan(config: Config, world_size: int = 1) -> dict[str, Any]:
    """Listing (files, index file, time it took: a read when the index exists, else the walk that writes it),
    cache use, loader workers and batch per rank, and checkpoint bytes (trained parameters + Adam's two
    moments, float32)."""
    started = time.perf_counter()
    files = listing(resolve_source(config.train_data))
    seconds = time.perf_counter() - started
    warp = warp_size(config.resolution)
    image_bytes = warp * warp * 3
    need_mb = len(files) * image_bytes / 2**20
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    workers = config.num_workers if config.num_workers >= 0 else default_workers(config.data_cache, device)
    params = trained_parameters(config)
    return {
        "listing": {"files": len(files), "index": str(files.index) if files.index else None,
                    "sha256": files.sha256, "seconds": round(seconds, 2)},
        "cache": {"enabled": config.data_cache, "budget_mb": config.data_cache_mb,
                  "needed_mb": round(need_mb, 2),
                  "per_rank_mb": round(min(need_mb, config.data_cache_mb) if config.data_cache else 0.0, 2),
                  "fits": (not config.data_cache) or need_mb <= config.data_cache_mb},
        "loader": {"workers_per_rank": workers, "batch_per_rank": config.batch_size // world_size,
                   "ranks": world_size, "batch": f"uint8 (B, 3, {config.resolution}, {config.resolution}), "
                   f"{'pinned' if device == 'cuda' else 'unpinned'}",
                   "decode": "cuda (nvJPEG)" if config.gpu_decode else "cpu", "warp": warp},
        "checkpoint": {"trained_parameters": params,
                       "bytes": 3 * 4 * sum(params.values())},  # weights + Adam exp_avg + exp_avg_sq, fp32
    }


def measure_step(config: Config, world_size: int = 1, threads: int = 0, budget_s: float = 15.0) -> dict[str, Any]:
    """Seconds per training step, measured in this process: a `Trainer` on the device the run would pick does
    one worker's step (batch_size / world_size images, its micro-batches) on a random batch — once to warm up,
    then up to two more within `budget_s`. Data decoding, grids and checkpoints are not in it. On a device
    this process cannot use (CUDA asked for where it is unusable) nothing is measured ("skipped": why).
    `threads`: the torch threads a worker of the run would get (0: this process's default)."""
    import tempfile
    from pathlib import Path

    per_worker, _ = batch_plan(config, world_size)
    try:
        device = pick_device(config)
    except DeviceError as err:
        return {"skipped": str(err)}
    one_worker = dataclasses.replace(config, batch_size=per_worker, compile=False)
    before = torch.get_num_threads()
    threads = config.threads if config.threads > 0 else threads or before
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="deepsim-dry-run-") as folder, torch.random.fork_rng(devices=[]):
            trainer = Trainer(one_worker, Path(folder), Session(show_progress=False))
            batch = torch.randint(0, 256, (per_worker, 3, config.resolution, config.resolution), dtype=torch.uint8,
                                  generator=torch.Generator().manual_seed(0))
            times = []
            started = time.perf_counter()
            while len(times) < 3 and (not times or time.perf_counter() - started < budget_s):
                t0 = time.perf_counter()
                trainer.step(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    measured = times[1:] or times  # the first step pays one-time costs; alone it is an upper bound
    return {"seconds_per_step": sum(measured) / len(measured), "steps_timed": len(measured),
            "warm_up_included": len(times) == 1, "device": str(device),
            "threads": threads, "batch_per_worker": per_worker}


def estimate_lines(config: Config, step: dict[str, Any]) -> str:
    """The measured step as a duration for the whole schedule (and where a time limit would stop it)."""
    if "skipped" in step:
        return f"time: not measured ({step['skipped']})"
    per_step, total = step["seconds_per_step"], step["seconds_per_step"] * config.steps
    line = (f"time: {per_step:.3g} s per step measured here ({step['steps_timed']} step(s) of {step['batch_per_worker']} "
            f"images on {step['device']}, {step['threads']} thread(s){', warm-up included' if step['warm_up_included'] else ''}) "
            f"→ ~{_duration(total)} for {config.steps:,} steps (training steps only: image decoding, grids and "
            "checkpoints add to it)")
    if config.time_limit_min > 0 and total > 60 * config.time_limit_min:
        line += (f"; the time limit of {config.time_limit_min:g} min stops it near step "
                 f"{int(60 * config.time_limit_min / per_step):,}")
    return line


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(plan: dict[str, Any]) -> str:
    """The plan as a few lines for the terminal."""
    lst, cache, loader, ckpt = plan["listing"], plan["cache"], plan["loader"], plan["checkpoint"]
    lines = [f"listing: {lst['files']:,} images, index {lst['index'] or '(none: list file or one image)'} "
             f"({lst['seconds']} s), sha256 {lst['sha256'][:16]}…",
             (f"cache: {cache['per_rank_mb']:,} MB per rank of {cache['needed_mb']:,} MB needed (budget "
              f"{cache['budget_mb']:,} MB{'' if cache['fits'] else ': the rest is decoded every step'})")
             if cache["enabled"] else f"cache: off (the set would need {cache['needed_mb']:,} MB)",
             f"loader: {loader['workers_per_rank']} persistent workers × {loader['ranks']} rank(s), "
             f"{loader['batch_per_rank']} images per rank per step, {loader['batch']}, decode on {loader['decode']}",
             f"checkpoint: {ckpt['bytes'] / 2**20:,.0f} MB ({', '.join(f'{k} {v:,}' for k, v in ckpt['trained_parameters'].items())} "
             "parameters + Adam moments, float32)"]
    return "\n".join(lines)
