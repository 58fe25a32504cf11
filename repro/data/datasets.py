"""Datasets of warped, cropped images: `ImageFolder` (CPU decoding), `EncodedFolder` (JPEG bytes for GPU
decoding) and the caches of warped images they may keep.

Exists to bound what one item costs: decoding and warping (`repro.data.caffe`), bounded by the optional
in-memory cache (`data_cache_mb`) or one file-backed map per node (`SharedCache`); unreadable images are
reported by path and skipped so that no corrupt file ends an epoch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data.caffe import UNREADABLE, crop_uint8, draw_crop, load_warped, warp_size
from repro.data.sources import DataError, Listing, cache_dir, listing

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 2048  # Config.data_cache_mb's default: Caltech-101 warped for 227 px is ~1.8 GB


class ImageFolder(Dataset):
    """Warped, cropped pipeline images from a folder of JPEG/PNG files (or a `Listing`).

    Items are addressed by `(index, seed)` pairs from `SeededSampler`; a plain int index gives the
    evaluation (centre) crop. Items are float (3, R, R) in [0, 1], or uint8 0–255 with `uint8=True` (what
    the training loader moves to the device). With `cache=True` the warped images are kept in memory as
    uint8 after first use, up to `cache_mb` megabytes per decoding process (the rest is decoded each time);
    with `shared=True` as well, in one file-backed map per node (`SharedCache`), up to `cache_mb` in all.
    """

    def __init__(self, root: str | Path | Listing, resolution: int, train: bool = True, mirror: bool = True,
                 cache: bool = False, limit: int | None = None, cache_mb: float = DEFAULT_CACHE_MB,
                 uint8: bool = False, shared: bool = False):
        files = root if isinstance(root, Listing) else listing(root, index=False)
        self.files = files[:limit] if limit else files
        self.root = self.files.root
        self.resolution = resolution
        self.warp = warp_size(resolution)
        self.train = train
        self.mirror = mirror
        self.uint8 = uint8
        self.cache = cache
        self.cache_mb = cache_mb
        self.cache_processes = 1  # decoding processes sharing the budget (make_loader sets it)
        self.shared = shared and cache
        self._node: SharedCache | None = None  # opened lazily, in the decoding process
        self._store: np.ndarray | None = None  # (capacity, warp, warp, 3), allocated in the decoding process
        self._slot: np.ndarray | None = None   # image index → row of _store, −1 when not cached
        self.bad: set[Path] = set()
        if cache and self.cache_capacity() < len(self.files):
            log.warning("data_cache: %d warped images of %.0f KB need %.0f MB, over data_cache_mb=%g; only "
                        "the first %d seen are kept, the rest decoded every time (raise data_cache_mb, or "
                        "pre-warp the set with `python -m repro.prewarp` and train without the cache)",
                        len(self.files), self.image_bytes / 1024, len(self.files) * self.image_bytes / 2**20,
                        cache_mb, self.cache_capacity())

    @property
    def image_bytes(self) -> int:
        return self.warp * self.warp * 3

    def cache_capacity(self) -> int:
        """How many warped images one decoding process may keep within the budget."""
        if not self.cache:
            return 0
        per_process = self.cache_mb * 2**20 / (1 if self.shared else max(1, self.cache_processes))
        return min(len(self.files), int(per_process // self.image_bytes))

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, index: int) -> np.ndarray:
        if not self.cache or self.cache_capacity() == 0:
            return load_warped(self.files[index], self.warp)
        if self.shared:
            if self._node is None:
                self._node = SharedCache(self.files, self.warp, self.cache_capacity())
            return self._node.get(index, lambda: load_warped(self.files[index], self.warp))
        if self._store is None:  # np.empty maps pages lazily: memory grows only as images are stored
            self._store = np.empty((self.cache_capacity(), self.warp, self.warp, 3), dtype=np.uint8)
            self._slot = np.full(len(self.files), -1, dtype=np.int64)
            self._used = 0
        slot = self._slot[index]
        if slot >= 0:
            return self._store[slot]
        array = load_warped(self.files[index], self.warp)
        if self._used < len(self._store):
            self._store[self._used] = array
            self._slot[index] = self._used
            self._used += 1
        return array

    def cached_bytes(self) -> int:
        """Bytes of warped images this process holds in its cache (the node's map: none of its own)."""
        return 0 if self._store is None else self._used * self.image_bytes

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        index, seed = (item, 0) if isinstance(item, int) else item
        array, _ = self._readable(index)
        crop = draw_crop(seed, self.warp, self.resolution, self.train, self.mirror)
        patch = crop_uint8(array, crop, self.resolution)
        return patch if self.uint8 else patch.float().div_(255.0)

    def _readable(self, index: int) -> tuple[np.ndarray, int]:
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            path = self.files[i]
            if path in self.bad:
                continue
            try:
                return self._decode(i), i
            except UNREADABLE as err:
                # A truncated or corrupt file must not end an epoch: report it, use the next image.
                self.bad.add(path)
                log.warning("skipping unreadable image %s (%s)", path, err)
        raise DataError(f"no readable image in {self.root}")


class SharedCache:
    """Warped images of one listing in a file-backed map per node, `DEEPSIM_CACHE/warped/<listing>-<n>-<warp>`:
    every process that maps it (the trials of a Tune search on the node, their loader workers, the next run)
    reads the same page-cache pages, so the node holds one copy instead of one per process.

    Row i holds image i for i < capacity (later images are decoded every time), and a byte per row says it
    is complete: a writer fills the row, then sets the byte. Two processes decoding the same image write the
    same bytes, so no lock is needed. The file is a cache: deleting it only costs decoding again."""

    def __init__(self, files: Listing, warp: int, capacity: int):
        folder = cache_dir() / "warped"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{files.sha256[:20]}-{len(files)}-{warp}.u8"
        self.capacity = capacity
        rows, flags = capacity * warp * warp * 3, capacity
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < rows + flags:  # sparse: pages exist only once written
                os.ftruncate(fd, rows + flags)
        finally:
            os.close(fd)
        self.images = np.memmap(self.path, np.uint8, "r+", 0, (capacity, warp, warp, 3))
        self.done = np.memmap(self.path, np.uint8, "r+", rows, (capacity,))

    def get(self, index: int, decode) -> np.ndarray:
        if index >= self.capacity:
            return decode()
        if self.done[index]:
            return self.images[index]
        array = decode()
        self.images[index] = array
        self.done[index] = 1
        return array


class EncodedFolder(ImageFolder):
    """For GPU decoding: items are (JPEG bytes as a uint8 tensor, crop as int64 [top, left, mirror]); a file
    that is not a JPEG is decoded and warped here and travels as uint8 (3, warp, warp) with a crop."""

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = (item, 0) if isinstance(item, int) else item
        crop = draw_crop(seed, self.warp, self.resolution, self.train, self.mirror)
        crop_tensor = torch.tensor([crop.top, crop.left, int(crop.mirror)])
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            if path in self.bad:
                continue
            data = np.fromfile(path, dtype=np.uint8)
            if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() == b"\xff\xd9":
                return torch.from_numpy(data), crop_tensor
            try:
                return torch.from_numpy(load_warped(path, self.warp).transpose(2, 0, 1).copy()), crop_tensor
            except UNREADABLE as err:
                self.bad.add(path)
                log.warning("skipping unreadable image %s (%s)", path, err)
        raise DataError(f"no readable image in {self.root}")
