"""What the throughput bench times: the loop's own `Trainer`, built from a preset, once per speed variant.

Kept apart so that every measurement (step times, phases, FLOPs, memory in its subprocess) builds the same
trainer from the same overrides, and a variant name means one set of config fields everywhere.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from repro.config import Config, make_config
from repro.loop import Balance, Trainer

# `reference` is the plain path: eager, fp32, NCHW. A variant turns on speed options, alone or joined by '+'.
REFERENCE = {"channels_last": False, "compile": False, "amp": "off"}
OPTIONS = {"channels_last": {"channels_last": True}, "bf16": {"amp": "bf16"}, "compile": {"compile": True}}

# The paper presets need the user's CaffeNet and ILSVRC-2012; timing needs neither: the shipped AlexNet (same
# layer sizes at pool5, no LRN) and the shared Caltech-101 stand in, and the record says so (its config).
PAPER_STAND_IN = {"encoder": "alexnet", "comparator": "alexnet", "train_data": "caltech101"}


def variant_overrides(name: str) -> dict[str, Any]:
    """Config fields of `reference`, or of speed options joined by '+', e.g. `channels_last+bf16+compile`."""
    overrides = dict(REFERENCE)
    if name == "reference":
        return overrides
    for option in name.split("+"):
        if option not in OPTIONS:
            raise SystemExit(f"error: unknown variant option {option!r} in {name!r}; "
                             f"use reference or {' / '.join(OPTIONS)} joined by '+'")
        overrides.update(OPTIONS[option])
    return overrides


def bench_config(preset: str, overrides: dict[str, Any] | None = None) -> Config:
    stand_in = PAPER_STAND_IN if preset.startswith("paper-") else {}
    return make_config(preset, {**stand_in, **(overrides or {})})


def make_trainer(preset: str, overrides: dict[str, Any]) -> Trainer:
    """The loop's trainer with the balancing rule held open (thresholds ±inf), so that every timed step is a
    full DeePSiM step that updates both D and G."""
    trainer = Trainer(bench_config(preset, overrides), Path(tempfile.gettempdir()) / "deepsim-bench")
    trainer.balance = Balance(pause_d_below=-math.inf, resume_d_above=-math.inf, pause_g_above=math.inf)
    return trainer
