"""Wall time of the loop's own `Trainer.step`, of the loader that feeds it, and of one Adam update.

Repeated work is timed with `torch.utils.benchmark.Timer` (it synchronises the accelerator around each
timed block and runs at the thread count given); the variants of one preset are timed in interleaved rounds
(fp32, A, B, …, fp32, A, B, …) so that load drifting on a shared machine hits all of them alike.
One-off work whose first run is the point (compilation, a cold cache pass), which Timer's warm-up runs
would hide, is read from a profiler range instead (`once_seconds`).
"""
from __future__ import annotations

import logging
import statistics
from typing import Any, Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.benchmark import Timer

from repro.config import Config
from repro.data import ImageFolder, infinite_batches, make_loader, resolve_folder
from repro.loop import Trainer

log = logging.getLogger(__name__)


def timer(stmt: str, **names: Any) -> Timer:
    """A Timer for `stmt` over `names`, at the thread count this process runs with (Timer's default is 1)."""
    return Timer(stmt, globals=names, num_threads=torch.get_num_threads())


def once_seconds(work: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call of `work` (device work included), from a `torch.profiler` range."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("bench/once"):
            work()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return next(e.cpu_time_total for e in prof.key_averages() if e.key == "bench/once") / 1e6


def step_seconds(trainers: dict[str, Trainer], real: torch.Tensor, rounds: int,
                 per_round: int) -> dict[str, list[float]]:
    """Seconds per `Trainer.step(real)` of every trainer, one mean per round of `per_round` steps. Each round
    also runs Timer's own two untimed steps first, which re-warm caches after the other variants ran."""
    timers = {name: timer("trainer.step(real)", trainer=trainer, real=real) for name, trainer in trainers.items()}
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for round_index in range(rounds):
        for name, step in timers.items():
            seconds[name].append(step.timeit(per_round).mean)
        log.info("  round %d/%d: %s", round_index + 1, rounds,
                 ", ".join(f"{n} {statistics.median(s):.3f} s" for n, s in seconds.items()))
    return seconds


def data_stream(config: Config, images: int, device: torch.device) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """The loop's loader (`ImageFolder` with the config's cache, `make_loader` with its workers) cycling over
    the first `images` training images; one pass fills the cache first, its rate reported as cold decoding."""
    dataset = ImageFolder(resolve_folder(config.train_data, False), config.resolution, train=True,
                          mirror=config.mirror, cache=config.data_cache, limit=max(images, 2 * config.batch_size))
    loader = make_loader(dataset, config.batch_size, seed=config.seed,
                         num_workers=None if config.num_workers < 0 else config.num_workers)
    batches = (batch for _, _, batch in infinite_batches(loader))
    cold = once_seconds(lambda: [next(batches) for _ in range(len(loader))], device)
    info = {"images": len(dataset), "cache": config.data_cache, "num_workers": loader.num_workers,
            "pin_memory": loader.pin_memory,
            "cold_decode_images_per_s": round(len(loader) * config.batch_size / cold, 1)}
    return batches, info


def batch_seconds(batches: Iterator[torch.Tensor], count: int) -> float:
    """Seconds per `next(batches)` from the warm loader, the mean over `count` batches."""
    return timer("next(batches)", batches=batches).timeit(count).mean


def adam_ms(trainer: Trainer, repeats: int = 5) -> dict[str, float | str]:
    """ms per Adam step on copies of G's parameters: per-tensor loop vs foreach vs fused (the loop's)."""
    out: dict[str, float | str] = {}
    for name, impl in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(p.detach().clone()) for p in trainer.g_params]
        for p in params:
            p.grad = torch.randn_like(p)
        try:
            opt = torch.optim.Adam(params, lr=2e-4, **impl)
            opt.step()
        except RuntimeError as err:  # an implementation this device lacks
            out[name] = f"unsupported: {err}".splitlines()[0]
            continue
        out[name] = round(1000 * timer("opt.step()", opt=opt).timeit(repeats).mean, 2)
        del opt, params
    return out
