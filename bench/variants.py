"""The speed variants the benches time (bench.throughput and the GPU check alike): the loop's own `Trainer`,
built from a preset, once per variant.

Kept apart so that every measurement (step times, phases, FLOPs, memory in its subprocess, the GPU check's
rows) builds the same trainer from the same overrides, and a variant name means one thing everywhere: its
config fields, the fp32 mode of cuBLAS and cuDNN while it steps, and the matrix-product peak it is held to.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from repro.balance import Balance
from repro.config import Config, make_config
from repro.errors import UsageError
from repro.loop import Trainer

# `fp32` is the plain path: eager, fp32 (TF32 off in cuBLAS and cuDNN), NCHW; the others join speed options to
# it with '+'. fp32, bf16 and channels_last+bf16 are `python -m repro.train --precision` names and set the same
# config fields (tests/test_bench.py). On CUDA, training with --precision fp32 keeps torch's defaults (cuDNN
# convolutions in TF32); the bench's fp32 is true fp32, the peak the `fp32` matmul figure measures.
BASELINE = "fp32"
REFERENCE = {"channels_last": False, "compile": False, "amp": "off"}  # the config fields of BASELINE
OPTIONS = {"tf32": {}, "bf16": {"amp": "bf16"}, "channels_last": {"channels_last": True},
           "compile": {"compile": True}}

# The paper presets need the user's CaffeNet and ILSVRC-2012; timing needs neither: the shipped AlexNet (same
# layer sizes at pool5, no LRN) and the shared Caltech-101 stand in, and the record says so (its config).
PAPER_STAND_IN = {"encoder": "alexnet", "comparator": "alexnet", "train_data": "caltech101"}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]  # config fields: REFERENCE with the options' changes
    fp32: str | None  # cuBLAS/cuDNN fp32 mode while it steps: "ieee", "tf32", or None (torch's defaults)
    peak: str  # the matrix-product peak it is held to: "fp32", "tf32" or "bf16"


def variant(name: str) -> Variant:
    """`fp32`, or speed options joined by '+' (e.g. `channels_last+bf16+compile`). Raises UsageError naming
    the options when one is unknown. bf16 variants keep torch's fp32 defaults for what autocast leaves in fp32,
    as training does; `tf32` lets cuBLAS and cuDNN use TF32; every other variant runs true fp32."""
    options = [] if name == BASELINE else name.split("+")
    overrides = dict(REFERENCE)
    for option in options:
        if option not in OPTIONS:
            raise UsageError(f"unknown variant option {option!r} in {name!r}; "
                             f"use {BASELINE} or {' / '.join(OPTIONS)} joined by '+'")
        overrides.update(OPTIONS[option])
    if "bf16" in options:
        return Variant(name, overrides, None, "bf16")
    if "tf32" in options:
        return Variant(name, overrides, "tf32", "tf32")
    return Variant(name, overrides, "ieee", "fp32")


def variant_overrides(name: str) -> dict[str, Any]:
    """The config fields of variant `name`."""
    return variant(name).overrides


def fp32_flags() -> dict[str, Any]:
    """What cuBLAS and cuDNN may do with fp32 now, read through the API that sets it (torch ≥ 2.9 refuses a
    mix of its `fp32_precision` and the older `allow_tf32` flags)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return {"matmul": torch.backends.cuda.matmul.fp32_precision,
                "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def fp32_mode(mode: str | None) -> Iterator[None]:
    """fp32 matmuls and convolutions in true fp32 ("ieee") or TF32 ("tf32") inside the block, restored after;
    None leaves torch's defaults (cuDNN convolutions in TF32, cuBLAS matmuls in fp32). No effect on the CPU."""
    if mode is None:
        yield
        return
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
        before = [backend.fp32_precision for backend in backends]
        try:
            for backend in backends:
                backend.fp32_precision = mode
            yield
        finally:
            for backend, value in zip(backends, before):
                backend.fp32_precision = value
    else:
        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class VariantTrainer(Trainer):
    """The loop's `Trainer` for one variant: every launched step (so `step` too) runs in the variant's fp32
    mode, set around the step because the mode is process-wide and the throughput bench interleaves
    variants in one process."""

    def __init__(self, config: Config, run_dir: Path, fp32: str | None):
        super().__init__(config, run_dir)
        self.fp32 = fp32

    def launch(self, real: torch.Tensor, stop: bool = False) -> None:
        with fp32_mode(self.fp32):
            super().launch(real, stop)


def bench_config(preset: str, overrides: dict[str, Any] | None = None) -> Config:
    stand_in = PAPER_STAND_IN if preset.startswith("paper-") else {}
    return make_config(preset, {**stand_in, **(overrides or {})})


def make_trainer(preset: str, name: str = BASELINE, overrides: dict[str, Any] | None = None) -> VariantTrainer:
    """The loop's trainer for variant `name` with the balancing rule held open (thresholds ±inf), so that
    every timed step is a full DeePSiM step that updates both D and G; `overrides` are further config fields."""
    chosen = variant(name)
    config = bench_config(preset, {**(overrides or {}), **chosen.overrides})
    trainer = VariantTrainer(config, Path(tempfile.gettempdir()) / "deepsim-bench", chosen.fp32)
    trainer.balance = Balance(pause_d_below=-math.inf, resume_d_above=-math.inf, pause_g_above=math.inf)
    return trainer
