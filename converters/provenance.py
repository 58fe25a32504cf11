"""Content identity of the files a conversion reads: weights are known by sha256, not by name."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path) -> dict[str, str]:
    """{"path", "sha256"} for manifests and ONNX metadata."""
    return {"path": str(path), "sha256": sha256_file(path)}
