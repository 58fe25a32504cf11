"""The numeric path a run trains on: the `--precision` names and the one rule for the default per device.

A config chooses the path with `amp` and `channels_last`. Left at auto (`amp="auto"`, `channels_last=None`: the
defaults), each takes the value of the device's default path (`default_precision`) when the run is resolved
(`resolve`); a value that is set (by a preset such as the CONV5* ones, `--set`, `--precision`, or an older run's
config.json, which holds "off"/"bf16" and a bool) stays as it is. `python -m repro.train` resolves before it
writes config.json, and the `Trainer` resolves what reaches it still at auto (a Tune trial, a test), so a run
folder, its checkpoints and its provenance hold the path the run trained on, and a resume keeps that path.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from repro.config import Config

if TYPE_CHECKING:
    import torch

# `--precision` names → the config fields each sets. Each is held equal to eager fp32 by tests/test_fast_paths.py
# (relative error per loss term: bf16 < 1e-2, channels_last < 1e-5).
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {"amp": "off", "channels_last": False},
    "bf16": {"amp": "bf16", "channels_last": False},
    "channels_last+bf16": {"amp": "bf16", "channels_last": True},
}

# The default: the fastest of them where it was measured. CPU: channels_last+bf16 is the fastest variant of
# bench/throughput.py at every resolution measured (results/perf.md, results/perf/cpu-small-pool5-r*.json:
# 1.34× eager fp32 at 64 px, 1.39× at 96, 1.57× at 128; bf16 alone 1.24–1.37×, channels_last alone 0.96–1.05×,
# torch.compile 0.94–1.04×) on a CPU with AVX-512 BF16. A CPU without bf16 instructions (AVX-512 BF16 or AMX)
# would emulate them and was not measured: it keeps fp32. CUDA: bf16 autocast + channels_last, the tensor cores'
# formats, on GPUs with bf16 in hardware (Ampere and later); not yet measured (bench/gpu_check.sh has not run on
# a GPU), and tests/test_fast_paths.py holds it to fp32 on whichever device runs it.
FAST = "channels_last+bf16"


def device_type(device: torch.device | str) -> str:
    """"cpu", "cuda" (or another torch device type) of a torch device or a config's device name, "auto" being the
    device `repro.devices.pick_device` would pick in this process."""
    # local: `python -m repro.train --help` reads PRECISIONS without loading torch
    import torch

    from repro.devices import pick_device

    return pick_device("auto").type if device == "auto" else torch.device(device).type


def default_precision(device: torch.device | str) -> str:
    """The `--precision` name a run on `device` trains with when its config leaves amp and channels_last at auto."""
    import torch

    kind = device_type(device)
    if kind == "cuda":
        # a cluster's driver that sees no GPU (--gpu --address …) decides for its workers' GPUs, taken to have bf16
        bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False)
        return FAST if bf16 else "fp32"
    if kind == "cpu":
        return FAST if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"
    return "fp32"


def resolve(config: Config, device: torch.device | str) -> Config:
    """`config` with amp="auto" and channels_last=None (auto) replaced by the fields of `device`'s default path
    (`default_precision`); set values stay."""
    if config.amp != "auto" and config.channels_last is not None:
        return config
    default = PRECISIONS[default_precision(device)]
    return dataclasses.replace(config, amp=default["amp"] if config.amp == "auto" else config.amp,
                               channels_last=default["channels_last"] if config.channels_last is None
                               else config.channels_last)


def name_of(config: Config) -> str:
    """The `--precision` name of a resolved config's path, or "custom" (e.g. amp=fp16)."""
    fields = {"amp": config.amp, "channels_last": config.channels_last}
    return next((name for name, chosen in PRECISIONS.items() if chosen == fields), "custom")


def describe(config: Config, device: torch.device | str) -> str:
    """The `--dry-run` line of a resolved config: its path, and the default on the device it trains on."""
    return (f"{name_of(config)} (amp={config.amp}, channels_last={str(config.channels_last).lower()}, "
            f"compile={str(config.compile).lower()}); default on {device_type(device)}: "
            f"{default_precision(device)}, --precision fp32 for eager fp32")
