"""Per-step counts that do not depend on timing: FLOPs, and host–device synchronisations on CUDA.

FLOPs make achieved GFLOP/s (and the fraction of a device's peak) comparable across variants; the sync
count checks the loop's promise of exactly one host sync per step (the read-back that feeds the balancing
rule and the non-finite check).
"""
from __future__ import annotations

import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from repro.loop import Trainer


def count_flops(trainer: Trainer, real: torch.Tensor) -> int:
    """FLOPs of one step (`FlopCounterMode`: convolutions and matmuls, forward and backward; not element-wise
    ops or Adam), the same on every device."""
    with FlopCounterMode(display=False) as counter:
        trainer.step(real)
    return int(counter.get_total_flops())


def count_syncs(trainer: Trainer, real: torch.Tensor) -> int | None:
    """Host–device synchronisations in one step (CUDA only), from the sync debug mode's warnings."""
    if trainer.device.type != "cuda":
        return None
    real = real.to(trainer.device)  # the H2D copy of the batch is not counted
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.step(real)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)
