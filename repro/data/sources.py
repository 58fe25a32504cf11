"""Image folders → pipeline images (B, 3, R, R) RGB, prepared the way Caffe prepared ILSVRC.

Caffe's ILSVRC recipe: warp every image to 256×256 (aspect ratio ignored), then take a 227×227 crop —
random with a random mirror for training, central for evaluation. For reduced-scale runs at resolution
R, the warp is scaled in proportion (round(256·R/227)). Network-specific preprocessing (BGR, mean,
normalisation) is *not* done here: it belongs to each network's `transform`.

At ImageNet scale (1.28M files) three things matter, each measured in results/scale.md:
- Listing: one iterative `os.scandir` walk (no stat per file: the directory entry's type suffices), written
  once to an index file — Caffe's `train.txt` format, "relative/path label" lines — keyed by the folder and
  read by every rank and every later run (`listing`). A user's own `train.txt` is accepted as `train_data`.
  The index's sha256 identifies the training data in provenance (`listing_sha256`).
- Decoding: `python -m repro.prewarp SRC OUT` writes the warped set once, offline, as Caffe's
  `convert_imageset` did; training then only decodes and crops (`training_loader`: persistent workers,
  per-rank shards, pinned uint8 batches that the step converts to float on the device).
- Memory: the optional in-memory cache of warped images is bounded by `data_cache_mb`.

Determinism: the sampler, which runs in the main process, draws each sample's crop seed, so crops do
not depend on the number of loader workers. Unreadable images are reported by path and skipped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from repro.assets import FOLDER_SHA256, asset_folder, assets_root
from repro.errors import DeepsimError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# What PIL raises for a file it cannot decode; DecompressionBombError (a header claiming more than ~179
# megapixels) derives from Exception alone and would otherwise end the epoch.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
DEFAULT_CACHE_MB = 2048  # Config.data_cache_mb's default: Caltech-101 warped for 227 px is ~1.8 GB


class DataError(DeepsimError, ValueError):
    """An image folder cannot be used (missing, empty, or every image unreadable)."""


# ---- listing ------------------------------------------------------------------------------------------
def scan_images(root: str | Path) -> tuple[bytes, dict[str, int]]:
    """(Caffe train.txt text of the images under `root`, mtime_ns of every folder walked by relative path).

    One iterative `os.scandir` walk. A directory entry's type comes with the entry (d_type), so files cost
    no stat; only folders are stat'ed (their mtimes let `listing` see that the tree changed). Each folder's
    entries are sorted by name and walked depth-first, which is the order `sorted(Path)` gave (by path
    components) without sorting 1.28M keys at once. Lines are "relative/path label", the label numbering
    the folders that hold images in order of appearance (ILSVRC-2012's train folders: the wnids, Caffe's
    order)."""
    root = Path(root)
    chunks: list[bytes] = []
    lines: list[str] = []
    folders: dict[str, int] = {}
    labels: dict[str, int] = {}
    pending: list[tuple[str, bool]] = [("", True)]  # (relative path, is a folder); the stack top sorts first
    while pending:
        relative, is_folder = pending.pop()
        if not is_folder:
            parent = relative.rpartition("/")[0]
            lines.append(f"{relative} {labels.setdefault(parent, len(labels))}\n")
            if len(lines) >= 8192:
                chunks.append("".join(lines).encode("utf-8", "surrogateescape"))
                lines.clear()
            continue
        folder = root / relative if relative else root
        folders[relative] = os.stat(folder).st_mtime_ns
        with os.scandir(folder) as entries:
            found = sorted((entry.name, entry.is_dir()) for entry in entries)  # is_dir: no syscall (d_type)
        pending.extend((f"{relative}{name}{'/' if sub else ''}", sub) for name, sub in reversed(found)
                       if sub or (os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and "\n" not in name))
    chunks.append("".join(lines).encode("utf-8", "surrogateescape"))
    return b"".join(chunks), folders


def _line_bounds(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the path on every non-empty line of a train.txt text, vectorised: the path ends at the
    line's last space (Caffe's `find_last_of(' ')`: "path label") or, without one, at the line's end."""
    buf = np.frombuffer(text, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:
        newlines = np.append(newlines, len(buf))
    starts = np.concatenate([[0], newlines[:-1] + 1]).astype(np.int64)
    ends = newlines.astype(np.int64)
    ends -= (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)  # CRLF files
    spaces = np.flatnonzero(buf == 32)
    if len(spaces):
        last = np.searchsorted(spaces, ends) - 1
        space = spaces[np.maximum(last, 0)]
        ends = np.where((last >= 0) & (space >= starts), space, ends)
    keep = ends > starts
    return starts[keep], ends[keep]


class Listing(Sequence):
    """The images of a training source: a root folder and its train.txt text, paths located by offsets (one
    bytes object and two integer arrays, ~70 MB for ImageNet: no Python object per file, so forked loader
    workers do not copy it page by page as they touch reference counts)."""

    def __init__(self, root: str | Path, text: bytes, index: Path | None = None,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None, sha256: str | None = None):
        self.root, self.text, self.index = Path(root), text, index
        self.starts, self.ends = bounds if bounds is not None else _line_bounds(text)
        self.sha256 = sha256 or hashlib.sha256(text).hexdigest()

    def __len__(self) -> int:
        return len(self.starts)

    def relative(self, i: int) -> str:
        return os.fsdecode(self.text[self.starts[i]: self.ends[i]])

    def __getitem__(self, item):
        if isinstance(item, slice):
            return Listing(self.root, self.text, self.index, (self.starts[item], self.ends[item]), self.sha256)
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        return self.root / self.relative(item)

    def __iter__(self) -> Iterator[Path]:
        return (self.root / self.relative(i) for i in range(len(self)))


def index_text(files: Sequence[str]) -> str:
    """Caffe's train.txt for relative paths in listing order: "path label", the label numbering the parent
    folders in order of appearance (as `scan_images` writes it)."""
    labels: dict[str, int] = {}
    return "".join(f"{f} {labels.setdefault(os.path.dirname(f), len(labels))}\n" for f in files)


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSIM_CACHE", Path.home() / ".cache" / "deepsim"))


def index_path(root: str | Path) -> Path:
    """Where the index of folder `root` is kept: $DEEPSIM_CACHE/listings/<hash of its absolute path>.txt
    (put $DEEPSIM_CACHE on shared storage and the ranks of every node read the driver's index)."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "listings" / f"{key}.txt"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # concurrent writers (ranks of several nodes) write the same bytes


def _index_is_fresh(root: Path, meta_path: Path) -> dict[str, Any] | None:
    """The saved meta of an index if every folder it walked still has its mtime (one stat per folder:
    adding, removing or renaming a file changes its folder's mtime), else None."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("root") != str(root.resolve()):
            return None
        for relative, mtime in meta["folders"].items():
            if os.stat(root / relative if relative else root).st_mtime_ns != mtime:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def listing(source: str | Path, index: bool = True) -> Listing:
    """The images of `source`: a folder (walked once by `scan_images`), a Caffe-style list file (`*.txt`:
    "path label" lines, paths relative to the file's folder or absolute, labels ignored; a line without a
    space is a path) or one image file.

    With `index=True` a folder's listing is written to `index_path(folder)` (+ `.json`: count, sha256,
    folder mtimes) and later calls — other ranks, later runs — read it instead of walking the tree again,
    as long as no folder changed. The listing's sha256 is that of its train.txt text."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"image folder {source} does not exist")
    if source.is_file() and source.suffix.lower() == ".txt":
        files = Listing(source.parent, source.read_bytes(), source)
        if not len(files):
            raise DataError(f"list file {source} names no images")
        if not files[0].is_file():
            raise DataError(f"list file {source}: its first image {files[0]} does not exist (paths are read "
                            f"relative to the list file's folder {source.parent}, or absolute)")
        return files
    if source.is_file():
        return Listing(source.parent, f"{source.name} 0\n".encode("utf-8", "surrogateescape"))
    target = index_path(source) if index else None
    meta = _index_is_fresh(source, target.with_suffix(".json")) if target is not None else None
    if meta is not None and target.is_file():
        files = Listing(source, target.read_bytes(), target)
        if len(files) == meta["count"] and files.sha256 == meta["sha256"]:
            return files
    text, folders = scan_images(source)
    if not text:
        raise DataError(f"image folder {source} holds no .jpg/.jpeg/.png files")
    files = Listing(source, text, target)
    if target is not None:
        _write_atomic(target, text)
        _write_atomic(target.with_suffix(".json"), json.dumps(
            {"root": str(source.resolve()), "count": len(files), "sha256": files.sha256, "folders": folders}).encode())
        log.info("listed %d images under %s; index %s", len(files), source, target)
    return files


def listing_sha256(train_data: str | Path) -> str:
    """sha256 of the training listing (its Caffe-style train.txt text), for provenance; writes/reads the
    index like `listing`. A shared asset name is resolved to its folder."""
    return listing(resolve_source(train_data)).sha256


def resolve_source(name_or_path: str | Path) -> Path:
    """A shared asset folder's path by name, else the path as given (not checked here)."""
    return assets_root() / str(name_or_path) if str(name_or_path) in FOLDER_SHA256 else Path(name_or_path)


def list_images(root: str | Path) -> list[Path]:
    """All JPEG/PNG files under `root` (recursively, sorted), of a list file, or `root` itself if it is
    an image. Writes no index: for evaluation sets and small folders."""
    return list(listing(root, index=False))


# ---- decoding, warping, cropping -------------------------------------------------------------------
def warp_size(resolution: int) -> int:
    """Side of the warped image before cropping: 256 at R=227, scaled in proportion otherwise."""
    return 256 if resolution == 227 else int(round(256 * resolution / 227))


def decode_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file (greyscale and alpha converted to RGB): uint8 (H, W, 3).

    OpenCV's decoder (libjpeg-turbo) gives the same pixels as PIL's on JPEGs (checked on the shared assets)
    at twice the speed, but it decodes a truncated JPEG without complaint, filling the rest with grey; so
    only a JPEG that ends with its end-of-image marker takes that path, everything else PIL's."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() == b"\xff\xd9":
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is not None:
            return bgr[:, :, ::-1]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_warped(path: str | Path, warp: int) -> np.ndarray:
    """Decode and warp to warp×warp (bicubic, as this project always did online; a pre-warped file of that
    size is only decoded); uint8 (warp, warp, 3)."""
    array = decode_rgb(path)
    if array.shape[:2] != (warp, warp):
        return np.asarray(Image.fromarray(array).resize((warp, warp), Image.BICUBIC), dtype=np.uint8)
    return np.ascontiguousarray(array)


def warp_like_caffe(array: np.ndarray, warp: int) -> np.ndarray:
    """Caffe's convert_imageset warp: cv::resize to warp×warp with OpenCV's default, bilinear
    interpolation (INTER_LINEAR, no anti-aliasing), aspect ratio ignored. uint8 (warp, warp, 3)."""
    return cv2.resize(np.ascontiguousarray(array), (warp, warp), interpolation=cv2.INTER_LINEAR)


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


def crop_uint8(array: np.ndarray, crop: Crop, resolution: int) -> torch.Tensor:
    """Crop (and mirror) a warped uint8 (H, W, 3) image into a uint8 (3, R, R) tensor, 0–255."""
    patch = array[crop.top : crop.top + resolution, crop.left : crop.left + resolution]
    if crop.mirror:
        patch = patch[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))


def to_tensor(array: np.ndarray, crop: Crop, resolution: int) -> torch.Tensor:
    """Crop (and mirror) a warped uint8 image into a (3, R, R) float tensor in [0, 1]."""
    return crop_uint8(array, crop, resolution).float().div_(255.0)


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


# ---- sampling and loading ---------------------------------------------------------------------------
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


def resolve_folder(name_or_path: str, verify: bool) -> Path:
    """A shared asset folder by name (sha256-checked) or any folder path the user gives."""
    if name_or_path in FOLDER_SHA256:
        return asset_folder(name_or_path, verify=verify)
    path = Path(name_or_path)
    listing(path)  # clear error when missing or empty; writes the index (train.txt) that every rank reads
    return path
