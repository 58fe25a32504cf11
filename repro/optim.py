"""The optimisers of a run and the device-side step: Adam with its fastest implementation, G's parameter groups
(Caffe's decay_mult), and an update skipped on the device when a gradient is not finite — no host sync. The
sequence they make (wait → unscale → finite check → step → zero_grad) is the loop's one `Trainer.update`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repro.nets.generator import CONV_LAYERS


def make_adam(params: list[nn.Parameter], device: torch.device, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fastest implementation of the same update rule: fused kernels on CUDA and CPU (3–4×
    faster than the per-tensor loop on CPU, bench/), the multi-tensor (foreach) path elsewhere; equal to the
    per-tensor loop up to float rounding."""
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(params, **kwargs, **fast)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of `module` that train (`requires_grad`), in order."""
    return [p for p in module.parameters() if p.requires_grad]


def grads_finite(params: list[nn.Parameter], device: torch.device) -> torch.Tensor:
    """1.0 if every gradient is finite, else 0.0, as a tensor on `device`: no host sync here."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), device=device)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, float("inf"))).float()


def optimizer_step(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """Step unless `ok` (a 0-d tensor on the device) is false, decided on the device: the fused Adam kernels
    skip the whole update, moments and step count included, when `found_inf` is set (the mechanism
    GradScaler uses), so no host sync is needed. Other implementations ask the host."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (ok <= 0).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(ok > 0):
        optimizer.step()


def generator_param_groups(model: nn.Module, map_decay: float) -> list[dict[str, Any]]:
    """G's trainable parameters; the weights of Rconv6–8 (the pool5 generator's map head) get weight decay
    `map_decay`: generator_pool5.prototxt gives them decay_mult 1 under the solver's weight_decay 4e-4, every
    other G parameter has decay_mult 0 (released prototxts and the training copy)."""
    decayed, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        (decayed if map_decay > 0 and parts[-1] == "weight" and parts[-2] in CONV_LAYERS else plain).append(p)
    groups = [{"params": plain}]
    if decayed:
        groups.append({"params": decayed, "weight_decay": map_decay})
    return groups
