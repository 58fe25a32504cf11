"""The run folder of a training run: the one rule for what is one (`run_config`), the log the loop writes into it
while it trains (`RunLog`: stats.jsonl, metrics.csv, TensorBoard), and reading it back once it has finished or
stopped (`load_run`: its config and trained model; `export_run`: its generator as a generator file). config.json
and provenance.json are written by `repro.train`, the checkpoints by `repro.checkpoint`."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repro import checkpoint, storage
from repro.assets import sha256_file
from repro.config import Config, from_dict
from repro.devices import pick_device
from repro.errors import DeepsimError
from repro.generator_file import save_generator
from repro.models import Inverter, Parts, build_parts


CONFIG_FILE = "config.json"  # written by repro.train before the first step
PROVENANCE_FILE = "provenance.json"  # written by repro.train when the run finishes or stops


class RunFolderError(DeepsimError, FileNotFoundError):
    """A folder given as a run folder that is not one (or not a finished one, where that is needed)."""


def run_config(folder: str | Path, finished: bool = False) -> dict[str, Any]:
    """The one rule for "is a run folder", used by every command that takes one (train --resume, evaluate,
    publish, sample, shipped, and `load_run`): the folder (a path or a storage URI) holds config.json, a JSON
    object; `finished` also asks for provenance.json, which a run writes only when it has stopped. Returns the
    saved config as a dictionary (its keys are checked by `repro.config.from_dict`, not here)."""
    location = str(folder)
    if not storage.exists(location):
        raise RunFolderError(f"{folder} is not a run folder: it does not exist")
    text = storage.read_text(storage.join(location, CONFIG_FILE))
    if text is None:
        raise RunFolderError(f"{folder} is not a run folder (no {CONFIG_FILE}): give a folder written by "
                             "python -m repro.train")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{storage.join(location, CONFIG_FILE)} is not JSON ({err}): the run folder is "
                             "damaged") from err
    if not isinstance(data, dict):
        raise RunFolderError(f"{storage.join(location, CONFIG_FILE)} holds no config object: the run folder is "
                             "damaged")
    if finished and not storage.exists(storage.join(location, PROVENANCE_FILE)):
        raise RunFolderError(f"{folder} has not finished or stopped (no {PROVENANCE_FILE}): let the run end, or "
                             "resume it with python -m repro.train --resume")
    return data


class RunLog:
    """The training log of a run folder, one row per logged step: stats.jsonl (JSON lines), metrics.csv (its
    columns fixed by the first row) and TensorBoard scalars (`tensorboard/`, as `train/<term>`). Only the main
    worker writes (`enabled`); the others get a writer that does nothing."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}}
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / "metrics.csv"
        new = not csv_path.exists()
        if new:
            header = sorted(row)
        else:  # the file's own header decides the columns: a skipped step's shorter row must not shift them
            with open(csv_path, newline="") as f:
                header = next(csv.reader(f), sorted(row))
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k, v in values.items():
            self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@dataclass
class Run:
    folder: Path
    config: Config
    parts: Parts
    step: int
    checkpoint: Path


def load_run(folder: str | Path, device: str | torch.device | None = None, step: int | None = None) -> Run:
    """Config from config.json, weights from the newest intact checkpoint (or the one of `step`, so runs can
    be compared at equal training); clear errors otherwise."""
    folder = Path(folder)
    config = from_dict(run_config(folder))
    if step is not None:
        ckpt_folder = folder / "checkpoints" / f"step-{step:08d}"
        if not ckpt_folder.is_dir():
            kept = ", ".join(p.name for p in sorted((folder / "checkpoints").glob("step-*"))) or "none"
            raise checkpoint.CheckpointError(f"run {folder} has no checkpoint of step {step} (kept: {kept})")
        state = checkpoint.load(ckpt_folder)
    else:
        found = checkpoint.load_latest(folder / "checkpoints")
        if found is None:
            raise checkpoint.CheckpointError(f"run {folder} has no intact checkpoint")
        ckpt_folder, state = found
    device = torch.device(device) if device else pick_device(config)
    parts = build_parts(config, device)
    checkpoint.load_model_state(parts.model, state["model"])  # strict, but checkpoints leave out the frozen encoder
    if parts.discriminator is not None and state.get("discriminator"):
        parts.discriminator.load_state_dict(state["discriminator"], strict=True)
    parts.model.eval()
    return Run(folder, config, parts, int(state["step"]), ckpt_folder)


def export_run(run_dir: str | Path, out: str | Path, step: int | None = None, half: bool = False) -> dict[str, Any]:
    """The generator of a training run (newest intact checkpoint, or `step`) as a generator file
    (`repro.generator_file`); returns the record written."""
    run = load_run(run_dir, device="cpu", step=step)
    if not isinstance(run.parts.model, Inverter):
        raise ValueError(f"{run_dir} is a model={run.config.model} run; only inversion runs have a feature generator")
    config = run.config
    weights_sha = sha256_file(config.encoder_weights) if config.encoder_weights else ""
    source = {"run": str(Path(run_dir).name), "step": run.step, "checkpoint": run.checkpoint.name}
    return save_generator(out, run.parts.model.generator, encoder=config.encoder, tap=config.layer,
                          encoder_weights_sha256=weights_sha, config=config.to_dict(), source=source, half=half)
