"""How a record was made: one schema and one writer for every run folder and results file.

Every record (a run's provenance.json, an evaluation's metrics.json, a comparison, a search, a figure, a
benchmark) starts with the same fields, so that the report and a reader find them in one place:

    command      the command line that made it (`python -m <module> <args>`)
    commit       git HEAD (+dirty) when the process first asked (see `git_commit`)
    data         {"train": …, "eval": …}: each folder's manifest sha256 or a user folder's listing sha256
    weights      {"encoder": …, "comparator": …}: path and sha256 of every weights file read
    device       one description of the device the work ran on
    torch        the torch version
    created      UTC time the record was written
    wall_time_s  seconds from the start of the work to the record

Fields that do not apply are left out (a figure has no device). Records add their own fields (step,
checkpoint, n_images, …) after these.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import shlex
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro import storage
from repro.assets import FOLDER_SHA256, sha256_file
from repro.needs import nets_used

# Modules that load torch (weights, data, generator_file, converters.squeezenet_dc) are imported where used: a
# record written by a light command (a benchmark's, Tune's driver) does not load torch for it.
if TYPE_CHECKING:
    import torch

    from repro.config import Config

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def git_commit() -> str:
    """HEAD (+dirty) when first asked: entry points ask at start, so the record names the code that was
    imported, even if the tree changes while a long run goes on. A copy without git (a device machine) may
    name its commit in DEEPSIM_COMMIT."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return os.environ.get("DEEPSIM_COMMIT", "unknown")


def command(module: str, argv: list[str]) -> str:
    return f"python -m {module} " + " ".join(shlex.quote(a) for a in argv)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | Path) -> str:
    """A file's sha256, hashed once per process while its size and mtime stay the same (a Trainer records
    its weights' identity in every checkpoint)."""
    stat = os.stat(path)
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def weights(config: Config) -> dict[str, str]:
    """sha256 of every weights file the run depends on (pretrained cache or user files)."""
    # local imports here and below: provenance is read by torch-free tools (report, publish); these load torch
    from repro.weights import weights_path

    out = {}
    for use in nets_used(config):  # the one rule of what a config builds
        role, name, user = use.role, use.name, use.weights
        if user:
            out[role] = f"{user} sha256={weights_sha256(user)}"
        elif use.cached:
            path = weights_path("alexnet_tv")
            out[role] = f"{path} sha256={weights_sha256(path) if path.exists() else 'missing'}"
        elif name == "squeezenet":
            from converters.squeezenet_dc import default_paths

            out[role] = " + ".join(f"{path} sha256={weights_sha256(path)}" for path in default_paths())
        else:
            out[role] = f"{name} (seeded random, seed {config.seed})"
    if config.init_generator:  # the warm start's weights (Config.init_generator)
        from repro.generator_file import init_generator_path

        path = init_generator_path(config.init_generator)
        out["init_generator"] = f"{path} sha256={weights_sha256(path) if path.exists() else 'missing'}"
    return out


def weight_identity(config: Config) -> dict[str, str]:
    """role → the sha256(s) of its weights, or how a seeded random net was drawn: what a resume compares (the
    same file may lie at another path on another node; another file may replace one at the same path)."""
    return {role: " + ".join(re.findall(r"sha256=(\w+)", text)) or text for role, text in weights(config).items()}


def data(config: Config) -> dict[str, str]:
    """The train and eval data by content: a shared folder's manifest hash, a user folder's listing hash."""
    from repro.data.sources import listing_sha256

    def describe(name: str) -> str:
        if name in FOLDER_SHA256:
            return f"../shared/assets/{name} sha256={FOLDER_SHA256[name]}"
        try:  # a user's folder or train.txt: the sha256 of its listing (paths, in order), not of every byte
            return f"{name} listing sha256={listing_sha256(name)}"
        except (OSError, ValueError) as err:
            return f"{name} (listing unreadable: {err})"

    return {role: describe(name) for role, name in (("train", config.train_data), ("eval", config.eval_data))}


def device(dev: torch.device | str | None = None) -> str:
    """`cuda:<name>` or `cpu (<processor>, <cores> cores, torch threads <n>)`; None: the first GPU if any."""
    import torch

    dev = torch.device(dev) if dev is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return (f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()})")


def record(cmd: str, *, run_config: Config | None = None, dev: torch.device | str | None = None,
           started: float | None = None, **fields: Any) -> dict[str, Any]:
    """The common fields (see the module docstring), then `fields`. `run_config` gives data and weights (a
    field of the same name overrides them), `dev` the device, `started` (a `time.time()`) the wall time."""
    import torch

    out: dict[str, Any] = {"command": cmd, "commit": git_commit()}
    if run_config is not None:
        out.update(data=data(run_config), weights=weights(run_config))
    if dev is not None:
        out["device"] = device(dev)
    out.update(torch=torch.__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if started is not None:
        out["wall_time_s"] = round(time.time() - started, 1)
    out.update(fields)
    return out


def write(folder: str | Path, rec: dict[str, Any], name: str = "provenance.json") -> None:
    """`folder/name` as indented JSON; `folder` may be a storage URI (see repro.storage)."""
    storage.write_text(storage.join(str(folder), name), json.dumps(rec, indent=2, default=str) + "\n")
