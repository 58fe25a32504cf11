"""Where a run folder lives: a local or shared path, or a URI that pyarrow.fs reads (s3://, gs://, hdfs://,
file://). A URI is kept exactly as given (never resolved into a local path); a path is made absolute.

On a multi-node Ray cluster every node writes to the run folder (rank 0 its logs and grids, Ray the
checkpoints), so it must be a URI or a path every node mounts: `check_shared` tells a driver-only folder
from a shared one before any worker starts.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from repro.errors import DeepsimError

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(DeepsimError, ValueError):
    """A run folder location that cannot work where the run is going."""


def is_uri(location: str | os.PathLike) -> bool:
    return bool(URI.match(str(location)))


def normalise(location: str | os.PathLike) -> str:
    """A URI unchanged; a path absolute (symlinks kept: the name every node mounts is the one to use)."""
    text = str(location)
    return text if is_uri(text) else os.path.abspath(os.path.expanduser(text))


def join(location: str, *parts: str) -> str:
    """`location/part/…` for a path or a URI (a URI is joined with '/', keeping its scheme and query-free form)."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(location, *parts))


def split(location: str) -> tuple[str, str]:
    """(parent, name): what Ray's RunConfig takes as storage_path and name, so that its experiment folder is
    the run folder itself."""
    if is_uri(location):
        parent, _, name = location.rstrip("/").rpartition("/")
        return parent, name
    path = Path(location)
    return str(path.parent), path.name


def filesystem(location: str):
    """(pyarrow FileSystem, path inside it)."""
    import pyarrow.fs

    if is_uri(location):
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), normalise(location)


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def has_content(location: str) -> bool:
    """Whether `location` exists and is not an empty folder (a run folder something was written to)."""
    if not is_uri(location):
        path = Path(location)
        return path.exists() and (not path.is_dir() or any(path.iterdir()))
    import pyarrow.fs

    fs, path = filesystem(location)
    kind = fs.get_file_info(path).type
    if kind == pyarrow.fs.FileType.NotFound:
        return False
    return kind != pyarrow.fs.FileType.Directory or bool(
        fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)))


def read_text(location: str) -> str | None:
    """The file's text, or None if it does not exist."""
    if not is_uri(location):
        path = Path(location)
        return path.read_text() if path.is_file() else None
    if not exists(location):
        return None
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(location: str, text: str) -> None:
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    fs, path = filesystem(location)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


class Mirror:
    """A node-local folder that stands for a run folder on a URI: `pull` fetches files to append to,
    `push` uploads every file that changed since the last push (rank 0 calls it after each report)."""

    def __init__(self, local: Path, location: str):
        self.local, self.location = local, location
        self.pushed: dict[str, tuple[int, int]] = {}

    def pull(self, *names: str) -> None:
        import pyarrow.fs

        fs, root = filesystem(self.location)
        for name in names:
            remote = f"{root.rstrip('/')}/{name}"
            if fs.get_file_info(remote).type == pyarrow.fs.FileType.File:
                target = self.local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(remote) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                stat = target.stat()
                self.pushed[name] = (stat.st_size, stat.st_mtime_ns)

    def push(self) -> list[str]:
        fs, root = filesystem(self.location)
        sent = []
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            name = path.relative_to(self.local).as_posix()
            stat = path.stat()
            if self.pushed.get(name) == (stat.st_size, stat.st_mtime_ns):
                continue
            remote = f"{root.rstrip('/')}/{name}"
            fs.create_dir(remote.rpartition("/")[0], recursive=True)
            with open(path, "rb") as src, fs.open_output_stream(remote) as dst:
                shutil.copyfileobj(src, dst)
            self.pushed[name] = (stat.st_size, stat.st_mtime_ns)
            sent.append(name)
        return sent


def alive_nodes(nodes: list[dict]) -> list[dict]:
    """The alive entries of `ray.nodes()`."""
    return [n for n in nodes if n.get("Alive")]


def require_shared(location: str, nodes: list[dict], storage_given: bool, address: str | None) -> None:
    """The rule for multi-node clusters: a run folder must be a URI, or lie under an explicit `--storage` (or
    be a resumed one), which `check_shared` then proves every node sees. A folder the driver chose by itself
    (the default runs/…, or --run-dir without --storage) counts as on the driver's disk only: StorageError."""
    alive = alive_nodes(nodes)
    if len(alive) <= 1 or is_uri(location) or storage_given:
        return
    raise StorageError(
        f"the Ray cluster at {address} has {len(alive)} alive nodes, but the run folder {location} is on this "
        "machine's disk only; give --storage PATH on a filesystem every node mounts, or --storage URI "
        "(s3://…, gs://…)")


def check_shared(location: str, nodes: list[dict], what: str = "--storage", timeout_s: float = 120.0) -> None:
    """Prove that every alive node sees the local path `location` (a URI needs no proof). For the storage
    (`what="--storage"`) the driver writes a marker file that each node must find (a folder of the same name
    on each node's own disk would not do); for anything else (an image folder) the path must exist. A
    zero-CPU task pinned to each node looks. Raises StorageError naming the first node that cannot."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = alive_nodes(nodes)
    if is_uri(location) or len(alive) <= 1:
        return
    probe, marker = Path(location), None
    if what == "--storage":
        marker = probe = Path(location) / f".deepsim-shared-check-{uuid.uuid4().hex[:12]}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("written by the driver; read by every node\n")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(str(probe)) for node in alive]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    blind = [node for node, seen in zip(alive, answers) if not seen]
    if blind:
        node = blind[0]
        raise StorageError(f"{what} {location} is not on every node: node {node.get('NodeManagerAddress')} "
                           f"({node['NodeID'][:12]}) does not see it; mount it there at the same path"
                           + (" or give a URI" if what == "--storage" else ""))
