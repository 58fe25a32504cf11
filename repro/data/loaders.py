"""Batches: the loop's training stream (`training_loader`, `infinite_batches`) and evaluation images
(`load_images`).

Exists to hold what makes the stream reproducible and fast: the sampler, which runs in the main process,
draws each sample's crop seed, so crops do not depend on the number of loader workers; it shards every epoch
by rank and resumes mid-epoch. Training batches are uint8 (persistent workers, pinned) that the step converts
to float on the device, or JPEGs decoded on the GPU (`GpuDecoded`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from repro.data.caffe import UNREADABLE, draw_crop, load_warped, to_tensor, warp_size
from repro.data.datasets import DEFAULT_CACHE_MB, EncodedFolder, ImageFolder
from repro.data.sources import DataError, list_images, listing, resolve_source


def _as_lists(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [data for data, _ in items], torch.stack([crop for _, crop in items])


class GpuDecoded:
    """Batches of an `EncodedFolder` loader decoded on `device` with nvJPEG (`torchvision.io.decode_jpeg`),
    warped there if needed (bilinear) and cropped: uint8 (B, 3, R, R) on the device. Pays where the CPU is
    the bottleneck (few cores per GPU, or raw full-size JPEGs); `sampler`/`batch_size` as a DataLoader's."""

    def __init__(self, loader: DataLoader, device: torch.device, warp: int, resolution: int):
        self.loader, self.device, self.warp, self.resolution = loader, torch.device(device), warp, resolution
        self.sampler, self.batch_size = loader.sampler, loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        for datas, crops in self.loader:
            jpegs = [i for i, d in enumerate(datas) if d.dim() == 1]
            images: list[torch.Tensor | None] = [None] * len(datas)
            if jpegs:
                decoded = decode_jpeg([datas[i] for i in jpegs], mode=ImageReadMode.RGB, device=self.device)
                for i, image in zip(jpegs, decoded):
                    images[i] = image
            out = []
            for image, data, (top, left, mirror) in zip(images, datas, crops.tolist()):
                image = data.to(self.device, non_blocking=True) if image is None else image
                if tuple(image.shape[1:]) != (self.warp, self.warp):
                    image = torch.nn.functional.interpolate(image[None].float(), size=(self.warp, self.warp),
                                                            mode="bilinear", align_corners=False)[0]
                    image = image.round_().clamp_(0, 255).to(torch.uint8)
                patch = image[:, top: top + self.resolution, left: left + self.resolution]
                out.append(patch.flip(-1) if mirror else patch)
            yield torch.stack(out)


class SeededSampler(Sampler):
    """Yields `(index, crop_seed)` for one epoch; shuffled by (seed, epoch), sharded by rank for DDP."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0  # positions of this epoch's shard already consumed (resuming mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**31 - 1, size=self.n)
        total = len(self) * self.world_size
        order = np.concatenate([order, order[: total - self.n]])  # pad so every rank gets as many
        for position in range(self.rank + self.start * self.world_size, total, self.world_size):
            yield int(order[position]), int(seeds[position % self.n])


def default_workers(cache: bool, device_type: str = "cpu") -> int:
    """Loader workers when the config says -1: none with the cache (it lives in the decoding process);
    min(2, cores − 1) on CPU so decoding overlaps the step without starving it; on CUDA, the cores per
    visible GPU minus one (at most 8): ~900 pre-warped 256 px JPEGs/s per core (results/scale.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cache:
        return 0
    if device_type == "cuda":
        per_gpu = cores // max(1, torch.cuda.device_count())
        return max(1, min(8, per_gpu - 1))
    return min(2, max(0, cores - 1))


def make_loader(dataset: ImageFolder, batch_size: int, seed: int = 0, shuffle: bool = True,
                num_workers: int | None = None, rank: int = 0, world_size: int = 1,
                drop_last: bool = True, persistent: bool = False, pin: bool | None = None) -> DataLoader:
    """A DataLoader over `(index, seed)` items, sharded by rank. Workers default to `default_workers`;
    `persistent` keeps them (and their open state) across epochs; batches are pinned when CUDA is there."""
    if num_workers is None:
        num_workers = default_workers(dataset.cache)
    dataset.cache_processes = max(1, num_workers)  # the cache budget is shared by the decoding processes
    sampler = SeededSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available() if pin is None else pin,
                      persistent_workers=persistent and num_workers > 0,
                      collate_fn=_as_lists if isinstance(dataset, EncodedFolder) else None,
                      # its own generator: creating an iterator must not draw from the global RNG, or a
                      # resumed run (which creates it at a different moment) would get other dropout masks
                      generator=torch.Generator().manual_seed(seed))


def require_one_batch(files: Sequence, source: str | Path, batch_size: int, world_size: int = 1) -> None:
    """Refuse a training set smaller than one batch: the loader drops an incomplete batch, so every epoch
    would be empty and training would wait forever. Each of `world_size` ranks takes batch_size / world_size
    images per step from its shard of ⌈n / world_size⌉."""
    per_rank = max(1, batch_size // world_size)
    if math.ceil(len(files) / world_size) < per_rank:
        ranks = f" over {world_size} workers ({per_rank} each)" if world_size > 1 else ""
        raise DataError(f"training data {source} holds {len(files)} image{'s' if len(files) != 1 else ''}, fewer "
                        f"than one batch of {batch_size}{ranks}: add images, or lower the batch (--set "
                        f"batch_size=N, N ≤ {len(files)})")


def training_loader(config: Any, rank: int = 0, world_size: int = 1,
                    device: torch.device | str = "cpu") -> DataLoader | GpuDecoded:
    """The loop's training batches: uint8 (B, 3, R, R) 0–255, B = batch_size / world_size, this rank's
    shard of every epoch, pinned when `device` is CUDA (the step divides by 255 on the device).

    `config.train_data` is a shared asset name, a folder (listed once into an index every rank reads; a
    folder written by `python -m repro.prewarp` is only decoded, not warped again) or a Caffe-style
    train.txt. Persistent loader workers, `config.num_workers` of them (−1: `default_workers`). With
    `config.gpu_decode` on a CUDA device, JPEGs are decoded on the GPU (`GpuDecoded`)."""
    device = torch.device(device)
    source = resolve_source(config.train_data)
    files = listing(source)
    require_one_batch(files, config.train_data, config.batch_size, world_size)
    cache = bool(config.data_cache)
    cache_mb = getattr(config, "data_cache_mb", DEFAULT_CACHE_MB)
    workers = None if config.num_workers < 0 else config.num_workers
    if workers is None:
        workers = default_workers(cache, device.type)
    per_worker = max(1, config.batch_size // world_size)
    on_gpu = getattr(config, "gpu_decode", False)
    if on_gpu and device.type != "cuda":
        raise DataError("gpu_decode=true needs a CUDA device (device=cuda); set gpu_decode=false on CPU")
    kind = EncodedFolder if on_gpu else ImageFolder
    dataset = kind(files, config.resolution, train=True, mirror=config.mirror, cache=cache and not on_gpu,
                   cache_mb=cache_mb, uint8=True, shared=getattr(config, "data_cache_shared", False))
    loader = make_loader(dataset, per_worker, seed=config.seed, rank=rank, world_size=world_size,
                         num_workers=workers, persistent=True, pin=device.type == "cuda" and not on_gpu)
    return GpuDecoded(loader, device, dataset.warp, config.resolution) if on_gpu else loader


def infinite_batches(loader: DataLoader | GpuDecoded, start_epoch: int = 0, skip: int = 0
                     ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(epoch, batch index in epoch, batch) forever. The sampler is re-seeded every epoch, and a resumed
    run skips the `skip` batches of `start_epoch` it had already consumed, so it sees the same stream."""
    epoch, first = start_epoch, skip
    while True:
        loader.sampler.set_epoch(epoch, start=first * loader.batch_size)
        empty = True
        for i, batch in enumerate(loader, start=first):
            empty = False
            yield epoch, i, batch
        if empty and first == 0:  # an epoch without a batch: the next ones would be empty too (no endless wait)
            dataset = loader.loader.dataset if isinstance(loader, GpuDecoded) else loader.dataset
            root = getattr(dataset, "root", "the training set")
            raise DataError(f"training data {root} gives no batch of {loader.batch_size} per worker (the "
                            f"incomplete batch is dropped): add images, or lower batch_size")
        epoch, first = epoch + 1, 0


def load_images(paths: Sequence[str | Path], resolution: int) -> torch.Tensor:
    """Evaluation-style (warp + centre crop) pipeline images from files or folders: (N, 3, R, R)."""
    files = [f for p in paths for f in list_images(p)]
    warp = warp_size(resolution)
    crop = draw_crop(0, warp, resolution, train=False, mirror=False)
    images = []
    for path in files:
        try:
            array = load_warped(path, warp)
        except UNREADABLE as err:
            raise DataError(f"cannot read image {path}: {err}") from err
        images.append(to_tensor(array, crop, resolution))
    return torch.stack(images)
