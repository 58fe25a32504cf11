"""Per-step counts that do not depend on timing (FLOPs, host–device synchronisations on CUDA), and the matrix-
product peak that achieved FLOP/s are held to.

FLOPs make achieved GFLOP/s (and the fraction of a device's peak) comparable across variants; the sync
count checks the loop's promise of exactly one host sync per step (the read-back that feeds the balancing
rule and the non-finite check). The peak is measured in the same process as the steps (a spec sheet's figure
says nothing of this machine's clocks, threads or load).
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import variants
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


def matmul_peak(device: torch.device, n: int, precisions: tuple[str, ...] = ("fp32", "tf32", "bf16"),
                seconds: float = 0.5) -> dict[str, Any]:
    """TFLOP/s of an n×n×n product in each variant precision (`fp32` true fp32, `tf32`, `bf16`): the mean of as
    many products as fill ~`seconds`, after warm-up (on CPU `tf32` is another fp32 figure: no such mode)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out: dict[str, Any] = {"n": n}
    for name in precisions:
        variant = variants.variant(name)
        dtype = torch.bfloat16 if variant.peak == "bf16" else torch.float32
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        with variants.fp32_mode(variant.fp32):
            for _ in range(2):
                a @ b
            sync()
            start = time.perf_counter()
            a @ b
            sync()
            repeats = int(max(3, min(200, seconds / max(time.perf_counter() - start, 1e-6))))
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            sync()
        out[f"{name}_tflops"] = float(f"{2 * n**3 * repeats / (time.perf_counter() - start) / 1e12:.4g}")
        del a, b
    return out
