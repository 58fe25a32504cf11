"""Where the time of one `Trainer.step` goes, read from `torch.profiler` over the loop's own step.

The loop marks its phases with `record_function` ranges (`repro.loop.Trainer.step`): "step/data",
"step/forward", "step/discriminator", "step/generator". Their totals (`key_averages`) are the phase times.

The shares by network need one more cut, because phase 2's single backward runs through the comparator,
D and G at once. For the profiled steps only, forward hooks open a range around each network's forward
("net/comparator" for the encoder and the comparator, "net/generator", "net/discriminator"); every
backward op is then given to the network whose forward op made it (the profiler records the autograd
sequence number of both). Each op's own time (CPU; kernel time on CUDA) goes to the innermost network
range around it, else to its phase: D's loss and update to the discriminator, G's optimiser step to the
generator, the batch upload to data, the rest (loss arithmetic, all-reduce, read-back) to `other`.
Compiled modules get no hooks (adding them would recompile): their shares are left out.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from repro.loop import Trainer
from repro.models import Inverter

STEP_RANGES = ("step/data", "step/forward", "step/discriminator", "step/generator")
NETS = ("comparator", "generator", "discriminator")
SHARES = ("data", *NETS, "other")
BACKWARD = "autograd::engine::evaluate_function: "
ROOT = "bench/step"
# a phase's own ops (not inside any network's forward) count for this share; Adam's step for its phase's net
PHASE_SHARE = {"step/data": "data", "step/forward": "generator", "step/discriminator": "discriminator",
               "step/generator": "other"}


def networks(trainer: Trainer) -> dict[str, list[nn.Module]]:
    """The modules whose forward gets a range: the encoder counts as a comparator (it is one, and with a
    shared tap its output is C(x))."""
    parts = trainer.parts
    model = parts.model
    nets: dict[str, list[nn.Module]] = {"comparator": [model.encoder], "generator": [model.generator],
                                        "discriminator": []}
    if parts.comparator is not None and parts.comparator is not model.encoder:
        nets["comparator"].append(parts.comparator)
    if parts.discriminator is not None:
        nets["discriminator"].append(parts.discriminator)
    return nets


@contextmanager
def network_ranges(nets: dict[str, list[nn.Module]]) -> Iterator[None]:
    """A "net/<name>" profiler range around each forward of these modules, while the context lasts."""
    with ExitStack() as stack:
        for name, modules in nets.items():
            for module in modules:
                opened: list[record_function] = []

                def enter(_module: nn.Module, _args: Any, name: str = name, opened: list = opened) -> None:
                    opened.append(record_function(f"net/{name}").__enter__())

                def leave(_module: nn.Module, _args: Any, _output: Any, opened: list = opened) -> None:
                    opened.pop().__exit__(None, None, None)

                stack.callback(module.register_forward_pre_hook(enter).remove)
                stack.callback(module.register_forward_hook(leave, always_call=True).remove)
        yield


def profile_steps(trainer: Trainer, real: torch.Tensor, steps: int, with_nets: bool) -> profile:
    """`steps` calls of `trainer.step(real)` under the profiler, each inside a "bench/step" range."""
    device = trainer.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with ExitStack() as stack:
        if with_nets:
            stack.enter_context(network_ranges(networks(trainer)))
        with profile(activities=activities) as prof:
            for _ in range(steps):
                with record_function(ROOT):
                    trainer.step(real)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
    return prof


def phase_seconds(prof: profile, steps: int, device: torch.device) -> dict[str, float]:
    """Seconds per step inside each of the loop's ranges and the whole step (the profiler's totals; on CUDA
    the kernel time launched inside them, from this thread)."""
    totals = {e.key: e for e in prof.key_averages() if e.key in (*STEP_RANGES, ROOT)}
    seconds = {}
    for key, e in totals.items():
        micro = e.device_time_total if device.type == "cuda" and key != ROOT else e.cpu_time_total
        seconds[key.removeprefix("step/").replace(ROOT, "step")] = micro / 1e6 / steps
    return seconds


def attribute(events: list[Any]) -> Iterator[tuple[Any, str]]:
    """Each profiler event with the share its own time counts for (see the module docstring)."""

    def ancestors(e: Any) -> Iterator[Any]:
        while e is not None:
            yield e
            e = e.cpu_parent

    def forward_share(e: Any) -> str | None:
        return next((a.name.removeprefix("net/") for a in ancestors(e) if a.name.startswith("net/")), None)

    # Ops that create no autograd node carry the next node's number too; the node's creator is the last op
    # to start with that number (the ops it calls, and all later ones, carry the next).
    creators: dict[tuple[int, int], Any] = {}
    for e in events:
        if e.sequence_nr >= 0 and not any(a.name.startswith(BACKWARD) for a in ancestors(e)):
            key = (e.thread, e.sequence_nr)
            if key not in creators or e.time_range.start >= creators[key].time_range.start:
                creators[key] = e
    made_by = {key: forward_share(e) for key, e in creators.items()}

    def share(e: Any) -> str:
        optimiser = False
        for a in ancestors(e):
            if a.name.startswith("net/"):
                return a.name.removeprefix("net/")
            if a.name.startswith(BACKWARD):
                net = made_by.get((a.fwd_thread, a.sequence_nr))
                if net is not None:
                    return net
            optimiser = optimiser or a.name.startswith("Optimizer.")
            if a.name in PHASE_SHARE:
                return "generator" if optimiser and a.name == "step/generator" else PHASE_SHARE[a.name]
        return "other"

    for e in events:
        yield e, share(e)


def net_fractions(prof: profile, device: torch.device) -> dict[str, float]:
    """Fractions of the profiled time by share (data, comparator, generator, discriminator, other), summing
    to 1: every op's own time (CPU; kernel time on CUDA), given as `attribute` says."""
    seconds = dict.fromkeys(SHARES, 0.0)
    for e, share in attribute(prof.events()):
        seconds[share] += e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total
    total = sum(seconds.values()) or 1.0
    return {k: v / total for k, v in seconds.items()}


def measure(trainer: Trainer, real: torch.Tensor, steps: int) -> dict[str, Any]:
    """Profile `steps` steps and return the loop's phase seconds and, for an eager inversion model, the
    fractions by network. One unprofiled step first re-warms caches after the other variants ran."""
    with_nets = isinstance(trainer.parts.model, Inverter) and not trainer.config.compile
    trainer.step(real)
    prof = profile_steps(trainer, real, steps, with_nets)
    return {"phase_seconds": phase_seconds(prof, steps, trainer.device),
            "fractions": net_fractions(prof, trainer.device) if with_nets else None}
