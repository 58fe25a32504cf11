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

# Networks whose weights only the user has: their architecture's seeded-random twin has the same shapes.
SAME_SHAPES = {"caffenet": "caffenet-random", "videonet": "caffenet-random", "alexnet": "alexnet-random",
               "alexnet-tv": "alexnet-random"}


def trained_parameters(config: Config) -> dict[str, int]:
    """Parameters that training updates (G, or the VAE/autoencoder, and D), counted on the meta device: no
    weights are read and no memory is allocated."""
    from repro.models import build_parts

    encoder = SAME_SHAPES.get(config.encoder)
    # the comparator trains nothing: any stand-in counts the same (an ONNX one's file is not read here)
    comparator = SAME_SHAPES.get(config.comparator) or "alexnet-random"
    shapes_only = dataclasses.replace(
        config, encoder=encoder or config.encoder, encoder_weights="" if encoder else config.encoder_weights,
        comparator=comparator, comparator_weights="",
        comparator_tap=config.comparator_tap if comparator == SAME_SHAPES.get(config.comparator) else "pool5",
        device="cpu", compile=False, channels_last=False)
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
