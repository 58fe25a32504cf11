"""Which images a source names: a folder walked once into Caffe's train.txt index, a list file, an asset.

Exists so that the one thing every rank and every later run must agree on — the list of training images and
its sha256 (`listing_sha256`, in provenance) — is computed in one place and cheaply at ImageNet scale
(results/scale.md): one iterative `os.scandir` walk with no stat per file (the directory entry's type
suffices), written once to an index file in Caffe's `train.txt` format ("relative/path label" lines) keyed by
the folder, and read by every rank and later run (`listing`). A user's own `train.txt` is accepted as
`train_data`. Shared asset folders are resolved by name (`resolve_source`, `resolve_folder`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from repro.assets import FOLDER_SHA256, asset_folder, assets_root
from repro.errors import DeepsimError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class DataError(DeepsimError, ValueError):
    """An image folder cannot be used (missing, empty, or every image unreadable)."""


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


def resolve_folder(name_or_path: str, verify: bool) -> Path:
    """A shared asset folder by name (sha256-checked) or any folder path the user gives."""
    if name_or_path in FOLDER_SHA256:
        return asset_folder(name_or_path, verify=verify)
    path = Path(name_or_path)
    listing(path)  # clear error when missing or empty; writes the index (train.txt) that every rank reads
    return path
