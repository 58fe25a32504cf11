"""Reading a finished (or interrupted) run folder back: its config and its trained model; its generator as a
generator file (`export_run`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repro import checkpoint
from repro.assets import sha256_file
from repro.config import Config, from_dict
from repro.devices import pick_device
from repro.generator_file import save_generator
from repro.models import Inverter, Parts, build_parts


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
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} is not a run folder (no config.json)")
    config = from_dict(json.loads(config_path.read_text()))
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
