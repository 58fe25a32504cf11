"""Where the shared, read-only assets live and how we prove they are the ones we expect.

Assets are never copied into the repository; they are read from `../shared/assets` beside the checkout
(or `$DEEPSIM_ASSETS`). Every folder or file we depend on is identified by content sha256.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from converters.provenance import sha256_file  # noqa: F401 - one definition, re-exported for repro
from repro.errors import DeepsimError

REPO_ROOT = Path(__file__).resolve().parents[1]

# sha256 of `find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum` inside each folder
# (the recipe of ../shared/assets/README.md).
FOLDER_SHA256 = {
    "imagenet-1k-256": "6cd031071b7586892a399b05a5427c2ed742522f15796a0d0d8e2fe03748427b",
    "caltech101": "ee7b84cfeb32f588681e317d2b20cccc176523309f39391fcf26bc45b177ed74",
}

FILE_SHA256 = {
    "caffe/bvlc_alexnet_deploy.prototxt": "b564ba76416b4ac1e062c6621cbd80d9c19304ba152d9d791c75870f3182c4fa",
    "caffe/bvlc_reference_caffenet_deploy.prototxt": "922248a4d2f6aac1cc8e7e5dbd996cc2ecd3356480d67c198f6cf96b12311a04",
    "caffe/ilsvrc_2012_mean.npy": "97eefba7e046ee097121ad18564329636d2f9c153b748c7313653cae8594a149",
    "caffe/synset_words.txt": "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355",
    "caffe/cat.jpg": "59b67bce343d435cb8f79b6abefc6eecc79924abcda6e7c7e39f8173bb932bc1",
    "videonet/unsup_net_deploy.prototxt": "b0675f3ced13e66432c795481a0a7adb0337fc40ba02d037ea030a3f02eedc7e",
    "videonet/video_mean.binaryproto": "192dab5f6c3c833d93bc392c8348bdc9228e13f0eb67c514a590fed7253d11b4",
}


class AssetError(DeepsimError, RuntimeError):
    """A shared asset is missing or is not the file/folder we expect."""


def assets_root() -> Path:
    """`$DEEPSIM_ASSETS`, else `../shared/assets` beside the repository."""
    env = os.environ.get("DEEPSIM_ASSETS")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "assets"
    if not root.is_dir():
        raise AssetError(
            f"shared assets not found at {root}: put the project beside ../shared/assets "
            "or set DEEPSIM_ASSETS to the assets folder"
        )
    return root


def sha256_folder(folder: str | Path) -> str:
    """The README's folder hash: sha256 over the `sha256sum` lines of all files, sorted by path."""
    folder = Path(folder)
    paths = sorted(
        ("./" + p.relative_to(folder).as_posix()).encode() for p in folder.rglob("*") if p.is_file()
    )
    listing = hashlib.sha256()
    for rel in paths:
        digest = sha256_file(folder / rel.decode()[2:])
        listing.update(f"{digest}  ".encode() + rel + b"\n")
    return listing.hexdigest()


def asset_file(rel: str, verify: bool = True) -> Path:
    """Path of a shared asset file, its sha256 checked against the manifest."""
    path = assets_root() / rel
    if not path.is_file():
        raise AssetError(f"missing shared asset {path}")
    if verify and rel in FILE_SHA256 and sha256_file(path) != FILE_SHA256[rel]:
        raise AssetError(f"shared asset {path} differs from the manifest (sha256); restore the original")
    return path


def asset_folder(name: str, verify: bool = True) -> Path:
    """Path of a shared image folder (`caltech101`, `imagenet-1k-256`), its content hash checked."""
    path = assets_root() / name
    if not path.is_dir():
        raise AssetError(f"missing shared image folder {path}")
    if verify and name in FOLDER_SHA256:
        got = sha256_folder(path)
        if got != FOLDER_SHA256[name]:
            raise AssetError(
                f"shared image folder {path} was altered: content sha256 {got[:12]}… "
                f"!= expected {FOLDER_SHA256[name][:12]}…; restore it from the original assets"
            )
    return path


def display_path(path: Path) -> str:
    """Relative to the repository when inside it, so committed results do not name one machine's folders."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
