"""Checkpoints written atomically with a checksum; the newest complete one is found after any crash.

Layout: `RUN_DIR/checkpoints/step-00000100/{state.pt, meta.json}`. A checkpoint is first written to a
hidden temporary folder, fsynced, its sha256 recorded in meta.json, then renamed into place (rename is
atomic on one filesystem). A folder without meta.json, or whose state.pt does not match its checksum,
is partial or corrupt: `load_latest` reports it and falls back to the previous one. The temporary
folder of a writer that was killed is removed by the next `save`.

What a checkpoint keeps of a model (`model_state`) leaves out its frozen encoder, whose weights come from the
registry or the user's file; `load_model_state` is strict on everything else.

The one resume rule: a resumed run may change the config fields in `RESUMABLE` and nothing else (weights files
compared by content). `check_resumable` applies it to `--resume --set …`, `check_resume_checkpoint` to the
checkpoint a --resume continues, and every load of a training state checks the `ARCHITECTURE` fields, which fix
the saved tensors' shapes (`check_architecture`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro import provenance
from repro.assets import sha256_file
from repro.comparators import Comparator
from repro.config import Config, ConfigError
from repro.errors import DeepsimError

log = logging.getLogger(__name__)
STATE, META = "state.pt", "meta.json"


class CheckpointError(DeepsimError, RuntimeError):
    """No usable checkpoint where one was required."""


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save(directory: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write `state` for `step`; keep the newest `keep` checkpoints. Returns the checkpoint folder."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
    remove_stale_temporaries(directory)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / STATE)
    _fsync(tmp / STATE)
    meta = {"step": step, "sha256": sha256_file(tmp / STATE), "bytes": (tmp / STATE).stat().st_size}
    (tmp / META).write_text(json.dumps(meta))
    _fsync(tmp / META)
    if final.exists():  # a re-run of the same step (e.g. after a resume) replaces the old one
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in directory.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary folders of writers that were killed mid-write (each one a whole state.pt,
    never matched by `step-*`, so they would otherwise pile up after every crash)."""
    for tmp in directory.glob(".tmp-step-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            log.info("removing %s, left by a writer that was interrupted", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def verify(folder: Path) -> str | None:
    """None if the checkpoint folder is complete and intact, else the reason it is not."""
    meta_path, state_path = folder / META, folder / STATE
    if not meta_path.exists() or not state_path.exists():
        return "incomplete (no meta.json or state.pt: the writer was interrupted)"
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:  # not JSON, or not even UTF-8 (a flipped byte)
        return "meta.json is not valid JSON"
    if not isinstance(meta, dict):
        return "meta.json does not hold a checkpoint record"
    if sha256_file(state_path) != meta.get("sha256"):
        return "state.pt does not match its recorded sha256 (corrupt or partially written)"
    return None


def load(folder: Path) -> dict[str, Any]:
    reason = verify(folder)
    if reason:
        raise CheckpointError(f"checkpoint {folder} is unusable: {reason}")
    return torch.load(folder / STATE, map_location="cpu", weights_only=True)


def recorded_sha256(folder: Path) -> str | None:
    """The sha256 of state.pt that the checkpoint's meta.json records (None without a readable one): what
    workers compare to know they loaded the very same checkpoint."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("sha256") if isinstance(meta, dict) else None


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name.removeprefix("step-"))
    except ValueError:
        return -1


def load_latest(directory: Path, after_step: int = -1) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint under `directory` of a step > `after_step` (skipping corrupt ones with a
    message), or None."""
    candidates = sorted((p for p in directory.glob("step-*") if p.is_dir() and _step_of(p) > after_step),
                        reverse=True) if directory.exists() else []
    for folder in candidates:
        reason = verify(folder)
        if reason is None:
            return folder, load(folder)
        log.warning("checkpoint %s is unusable: %s; falling back to the previous one", folder, reason)
    return None


def frozen_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the model's frozen networks (encoders that are Comparators): their weights come
    from the registry or the user's file, never from a checkpoint."""
    return tuple(f"{name}." for name, module in model.named_modules() if name and isinstance(module, Comparator))


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the model: everything but the frozen encoder's weights."""
    frozen = frozen_prefixes(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(frozen)}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `model_state` output (or an older checkpoint that still holds the frozen encoder, whose copy is
    ignored): strict on everything that is not frozen — a missing or unexpected key fails with its name."""
    frozen = frozen_prefixes(model)
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(frozen)},
                                                strict=False)
    missing = [k for k in missing if not k.startswith(frozen)]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit this model: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")


# ---- the one resume rule ---------------------------------------------------------------------------------------
# Config fields a resumed run may change (`--resume RUN_DIR --set steps=…`): how long it runs, how often it logs,
# draws and saves, where and on how many workers, what a non-finite loss does. All others are the run's own.
RESUMABLE = frozenset({"steps", "log_every", "image_every", "checkpoint_every", "num_workers", "device", "threads",
                       "nonfinite", "keep_checkpoints"})
# Of the run's own fields, those that give the saved tensors their shapes. Every load of a training state checks
# them, also the loads that change other fields of the run on purpose: a Tune trial exploited under PBT (its λ),
# bench/gpu_check continuing a GPU run on the CPU (amp, channels_last).
ARCHITECTURE = ("model", "encoder", "layer", "resolution", "generator_width", "discriminator_width", "comparator",
                "comparator_tap", "latent_dim", "discriminator_features")
# Weights files are the run's own by content: the same file may lie at another path on another node.
WEIGHTS_FILES = frozenset({"encoder_weights", "comparator_weights"})


def _as_json(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    """A config as its JSON dict (tuples are lists), whether a Config or already such a dict."""
    return json.loads(config.to_json()) if isinstance(config, Config) else dict(config)


def resume_conflicts(saved: Config | Mapping[str, Any], current: Config | Mapping[str, Any],
                     may_change: Iterable[str] = RESUMABLE) -> list[str]:
    """The rule itself: the fields, sorted, that `current` holds with another value than `saved` and that a resume
    may not change (any outside `may_change`). A field `saved` lacks (a run of an older version) is not compared."""
    saved, current, allowed = _as_json(saved), _as_json(current), set(may_change)
    return sorted(k for k, v in current.items() if k in saved and k not in allowed and saved[k] != v)


def check_resumable(old_config: Config, new_config: Config) -> None:
    """A run's saved config against the one it resumes with (its config.json with the `--set` overrides of a
    --resume): ConfigError naming every field it may not change."""
    changed = resume_conflicts(old_config, new_config)
    if changed:
        raise ConfigError(f"cannot change {changed} when resuming; allowed: {sorted(RESUMABLE)}")


def check_resume_checkpoint(folder: Path, state: dict[str, Any], config: Config, config_path: Path | str) -> None:
    """The checkpoint a --resume continues (`folder`, its `state`) against the run's config (`config_path`, with
    any overrides): ConfigError when it was made with another config (a field outside RESUMABLE) or trained with
    other weights. Weights files count by content (sha256) when the checkpoint recorded it, else (older
    checkpoints) by path."""
    by_content = "weights" in state
    differ = resume_conflicts(json.loads(state["config"]), config,
                              RESUMABLE | WEIGHTS_FILES if by_content else RESUMABLE)
    if differ:
        raise ConfigError(f"checkpoint {folder} was made with another config than {config_path} "
                          f"(differing: {', '.join(differ)}); resume a run folder with its own config.json")
    if by_content:
        now = provenance.weight_identity(config)
        changed = [f"{role} {state['weights'][role]} → {now[role]}" for role in now
                   if state["weights"].get(role) != now[role]]
        if changed:
            raise ConfigError(f"checkpoint {folder} was trained with other weights than this run would load "
                              f"({'; '.join(changed)}); give the files it was trained with")


def check_architecture(state: dict[str, Any], config: Config) -> None:
    """A training state against the model it is about to load into: CheckpointError when any ARCHITECTURE field
    differs (or the state's config lacks it)."""
    saved = json.loads(state["config"])
    mismatched = sorted(k for k in ARCHITECTURE if saved.get(k) != getattr(config, k))
    if mismatched:
        raise CheckpointError(f"checkpoint was made with a different architecture ({', '.join(mismatched)} differ); "
                              "resume it with its own config.json")
