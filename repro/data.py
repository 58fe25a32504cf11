"""Image folders → pipeline images (B, 3, R, R) RGB in [0, 1], prepared the way Caffe prepared ILSVRC.

Caffe's ILSVRC recipe: warp every image to 256×256 (aspect ratio ignored), then take a 227×227 crop —
random with a random mirror for training, central for evaluation. For reduced-scale runs at resolution
R, the warp is scaled in proportion (round(256·R/227)). Network-specific preprocessing (BGR, mean,
normalisation) is *not* done here: it belongs to each network's `transform`.

Determinism: the sampler, which runs in the main process, draws each sample's crop seed, so crops do
not depend on the number of loader workers. Unreadable images are reported by path and skipped.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# What PIL raises for a file it cannot decode; DecompressionBombError (a header claiming more than ~179
# megapixels) derives from Exception alone and would otherwise end the epoch.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class DataError(ValueError):
    """An image folder cannot be used (missing, empty, or every image unreadable)."""


def list_images(root: str | Path) -> list[Path]:
    """All JPEG/PNG files under `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {root} holds no .jpg/.jpeg/.png files")
    return files


def warp_size(resolution: int) -> int:
    """Side of the warped image before cropping: 256 at R=227, scaled in proportion otherwise."""
    return 256 if resolution == 227 else int(round(256 * resolution / 227))


def load_warped(path: Path, warp: int) -> np.ndarray:
    """Decode (greyscale and alpha converted to RGB) and warp to warp×warp; uint8 (warp, warp, 3)."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((warp, warp), Image.BICUBIC)
        return np.asarray(img, dtype=np.uint8).copy()


@dataclass(frozen=True)
class Crop:
    """Where to crop and whether to mirror, drawn by the sampler from a per-sample seed."""

    top: int
    left: int
    mirror: bool


def draw_crop(seed: int, warp: int, resolution: int, train: bool, mirror: bool) -> Crop:
    if not train:
        offset = (warp - resolution) // 2
        return Crop(offset, offset, False)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, warp - resolution + 1, size=2)
    return Crop(int(top), int(left), bool(mirror and rng.random() < 0.5))


def to_tensor(array: np.ndarray, crop: Crop, resolution: int) -> torch.Tensor:
    """Crop (and mirror) a warped uint8 image into a (3, R, R) float tensor in [0, 1]."""
    patch = array[crop.top : crop.top + resolution, crop.left : crop.left + resolution]
    if crop.mirror:
        patch = patch[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div_(255.0)


class ImageFolder(Dataset):
    """Warped, cropped pipeline images from a folder of JPEG/PNG files.

    Items are addressed by `(index, seed)` pairs from `SeededSampler`; a plain int index gives the
    evaluation (centre) crop. With `cache=True` the decoded, warped images are kept in memory as uint8
    after first use, which removes JPEG decoding from the training step.
    """

    def __init__(self, root: str | Path, resolution: int, train: bool = True, mirror: bool = True,
                 cache: bool = False, limit: int | None = None):
        self.root = Path(root)
        self.files = list_images(root)[:limit] if limit else list_images(root)
        self.resolution = resolution
        self.warp = warp_size(resolution)
        self.train = train
        self.mirror = mirror
        self.cache = {} if cache else None
        self.bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, index: int) -> np.ndarray:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        array = load_warped(self.files[index], self.warp)
        if self.cache is not None:
            self.cache[index] = array
        return array

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        index, seed = (item, 0) if isinstance(item, int) else item
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            if self.files[i] in self.bad:
                continue
            try:
                array = self._decode(i)
                break
            except UNREADABLE as err:
                # A truncated or corrupt file must not end an epoch: report it, use the next image.
                self.bad.add(self.files[i])
                log.warning("skipping unreadable image %s (%s)", self.files[i], err)
        else:
            raise DataError(f"no readable image in {self.root}")
        crop = draw_crop(seed, self.warp, self.resolution, self.train, self.mirror)
        return to_tensor(array, crop, self.resolution)


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


def make_loader(dataset: ImageFolder, batch_size: int, seed: int = 0, shuffle: bool = True,
                num_workers: int | None = None, rank: int = 0, world_size: int = 1,
                drop_last: bool = True) -> DataLoader:
    """A DataLoader over `(index, seed)` items. Workers default to min(2, cores-1) so decoding overlaps
    the step; with an in-memory cache, 0 workers (the cache lives in this process)."""
    if num_workers is None:
        num_workers = 0 if dataset.cache is not None else min(2, max(0, (os.cpu_count() or 1) - 1))
    sampler = SeededSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False,
                      # its own generator: creating an iterator must not draw from the global RNG, or a
                      # resumed run (which creates it at a different moment) would get other dropout masks
                      generator=torch.Generator().manual_seed(seed))


def infinite_batches(loader: DataLoader, start_epoch: int = 0, skip: int = 0
                     ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(epoch, batch index in epoch, batch) forever. The sampler is re-seeded every epoch, and a resumed
    run skips the `skip` batches of `start_epoch` it had already consumed, so it sees the same stream."""
    epoch, first = start_epoch, skip
    while True:
        loader.sampler.set_epoch(epoch, start=first * loader.batch_size)
        for i, batch in enumerate(loader, start=first):
            yield epoch, i, batch
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
