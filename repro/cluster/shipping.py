"""What a cluster's workers get from the driver: the code and the weights files the run reads.

The code travels with the job (`runtime_env`: the packages of CLUSTER_PACKAGES as `py_modules`, the assets
folder by path); each weights file through Ray's object store with its sha256 (`ship_weights` on the driver,
`install_weights` on a worker), so that a node without ~/.cache/deepsim, or without the user's file, gets this
machine's copy. Used by `repro.cluster.launcher` and by `tune`, whose trials run the same loop.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from repro.assets import AssetError, assets_root, sha256_file
from repro.config import Config
from repro.needs import nets_used
from repro.weights import weights_path

# Ray is imported inside the functions that use it: an optional dependency (`--launcher local` runs without it).

log = logging.getLogger(__name__)

# The code a cluster's workers import (tune's trials run this loop too), found beside this package by path: repro
# does not import tune to locate it.
CLUSTER_PACKAGES = tuple(Path(__file__).resolve().parents[2] / name for name in ("repro", "converters", "tune"))


def weight_files(config: Config) -> list[tuple[str, Path]]:
    """(config field, or "cache" for the pretrained cache, path) of every weights file the run reads; the
    squeezenet files are assets (they travel with the assets folder)."""
    files = []
    for use in nets_used(config):  # the one rule of what a config builds
        if use.weights:
            files.append((use.field, Path(use.weights)))
        elif use.cached:
            files.append(("cache", weights_path("alexnet_tv")))
    return sorted(set(files))


def ship_weights(config: Config) -> list[dict[str, Any]]:
    """Put every weights file the run reads into Ray's object store, with its sha256, so that a node without
    it (no ~/.cache/deepsim there, or the user's file only on this machine) gets this machine's copy. A
    missing file is an AssetError here, on the driver, not a crash inside a worker."""
    import ray

    files = weight_files(config)
    for field, path in files:  # all checked before any is put
        if not path.is_file():
            hint = "run `make weights` on this machine" if field == "cache" else f"fix --set {field}="
            raise AssetError(f"weights file {path} ({field}) is missing on the driver: {hint}")
    shipped = []
    for field, path in files:
        data = path.read_bytes()
        shipped.append({"field": field, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                        "ref": ray.put(data)})
    return shipped


def install_weights(config: Config, shipped: list[dict[str, Any]]) -> Config:
    """On a worker: each shipped weights file is used where it lies when its sha256 matches the driver's;
    else the driver's copy is fetched from the object store, its sha256 checked, and written to a node-local
    folder (the pretrained cache through $DEEPSIM_CACHE, a user file by its config field in this worker's
    config)."""
    import ray

    changes = {}
    for item in shipped:
        path = Path(item["path"])
        here = weights_path(path.stem) if item["field"] == "cache" else path  # this node's cache, or the user's path
        if here.is_file() and sha256_file(here) == item["sha256"]:
            continue
        data = ray.get(item["ref"])
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise AssetError(f"the copy of {path} received from the driver does not match its sha256")
        folder = Path(tempfile.gettempdir()) / "deepsim-weights" / item["sha256"][:16]
        target = folder / "weights" / path.name if item["field"] == "cache" else folder / path.name
        if not (target.is_file() and sha256_file(target) == item["sha256"]):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            partial.write_bytes(data)
            os.replace(partial, target)
        if item["field"] == "cache":
            os.environ["DEEPSIM_CACHE"] = str(folder)
        else:
            changes[item["field"]] = str(target)
        log.info("%s: using the driver's copy (sha256 %s…) at %s", path, item["sha256"][:12], target)
    return dataclasses.replace(config, **changes) if changes else config


def quiet_ray_workers() -> None:
    """Runs in every Ray worker process at start (`worker_process_setup_hook`). We start Ray without its
    dashboard, so Ray Train's placement-group cleaner cannot reach the state API and would print a
    warning about it every second of the run; only its errors are kept."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def runtime_env(args: argparse.Namespace) -> dict[str, Any]:
    """What every Ray worker process gets. On a cluster (`--address`) the code travels with the job
    (`py_modules`: the packages in CLUSTER_PACKAGES), and the assets folder is named explicitly
    (the shipped package no longer sits beside ../shared/assets): every node must mount it at that path,
    which `connect_ray` checks."""
    env: dict[str, Any] = {"worker_process_setup_hook": quiet_ray_workers}
    if not args.address:
        # A local runtime has no node that a cloud could preempt: without Ray Train's preemption watcher its
        # controller prints no alarming `PreemptionWatcher … max_restarts > 0` error line on every run.
        env["env_vars"] = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    if args.address:
        env["py_modules"] = [str(path) for path in CLUSTER_PACKAGES]
        env["env_vars"] = {"DEEPSIM_ASSETS": str(assets_root())}
    return env
