"""One record of the throughput bench: every measurement of one preset at one resolution, the variants
side by side, and the projection of the paper's schedule from them.

Order matters on a shared machine and for compilation: the counts (FLOPs, syncs, Adam) first, then each
variant's untimed warm-up (compilation), the loader, the step times in interleaved rounds, the profiled
steps for the phase shares, and last the memory probes in their own processes.
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
from typing import Any

from bench import phases
from bench.counters import count_flops, count_syncs, matmul_peak
from bench.memory import measure_memory
from bench.timing import adam_ms, batch_seconds, data_stream, once_seconds, step_seconds
from bench.variants import BASELINE, REFERENCE, bench_config, make_trainer, variant, variant_overrides

log = logging.getLogger(__name__)
PAPER_STEPS = 1_000_000  # the paper's schedule (generator iterations)


def shares(step: float, data: float, fractions: dict[str, float] | None) -> dict[str, float] | None:
    """Shares of step + loader time: the loader's wait and the step's "data" range as data, the rest of the
    step split by the profiled fractions (bench.phases)."""
    if fractions is None:
        return None
    total = step + data
    out = {k: step * v / total for k, v in fractions.items()}
    out["data"] += data / total
    return {k: round(v, 4) for k, v in out.items()}


def bench_one(preset: str, resolution: int, variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    base = {"resolution": resolution, "device": args.device, "verify_data": False, "threads": args.threads}
    if args.batch_size:
        base["batch_size"] = args.batch_size
    names = [BASELINE, *variants]
    log.info("%s @ %d: building %s", preset, resolution, ", ".join(names))
    trainers = {name: make_trainer(preset, name, base) for name in names}
    reference = trainers[BASELINE]
    config, device = reference.config, reference.device
    batches, data_info = data_stream(config, args.data_images, device)
    log.info("  data: %s", data_info)

    record: dict[str, Any] = {
        "preset": preset, "resolution": resolution, "batch_size": config.batch_size,
        "preset_batch_size": bench_config(preset).batch_size,
        "generator_width": config.generator_width, "discriminator_width": config.discriminator_width,
        "data": data_info,
    }
    real = next(batches)
    record["flops_per_step"] = count_flops(reference, real)
    record["host_syncs_per_step"] = count_syncs(reference, real)
    record["adam_ms_per_step_G"] = adam_ms(reference)
    log.info("  %.1f GFLOP per step; Adam (G) ms: %s", record["flops_per_step"] / 1e9, record["adam_ms_per_step_G"])

    warmup_s = {}
    for name, trainer in trainers.items():  # compilation, allocator, caches
        warmup_s[name] = once_seconds(lambda trainer=trainer: [trainer.step(real) for _ in range(args.warmup)], device)
        log.info("  warm-up %s: %.1f s", name, warmup_s[name])
    data_s = batch_seconds(batches, max(args.steps, 1))
    step_s = step_seconds(trainers, real, args.rounds, max(1, math.ceil(args.steps / args.rounds)))
    profiled = {name: phases.measure(trainer, real, args.phase_steps) if args.phase_steps >= 1 else None
                for name, trainer in trainers.items()}

    # The peak each variant is held to, measured here after the steps (same process, same threads and load);
    # --peak-tflops replaces it with one given figure for every variant.
    peaks = {} if args.peak_tflops else matmul_peak(device, 2048 if device.type == "cpu" else 8192)
    record["matmul_peak_tflops"] = {"given": args.peak_tflops} if args.peak_tflops else peaks
    log.info("  matmul peak (TFLOP/s): %s", record["matmul_peak_tflops"])

    def fraction(name: str, gflops: float) -> float | None:
        peak = args.peak_tflops or peaks.get(f"{variant(name).peak}_tflops")
        return round(gflops / 1000 / peak, 4) if peak else None

    ref_step = statistics.median(step_s[BASELINE])
    results = {}
    for name in trainers:
        step = statistics.median(step_s[name])
        gflops = record["flops_per_step"] / step / 1e9
        results[name] = {
            "overrides": {k: variant_overrides(name)[k] for k in REFERENCE},
            "step_s": round(step, 4), "data_s": round(data_s, 5),
            "step_s_rounds": [round(s, 4) for s in step_s[name]],
            "images_per_s": round(config.batch_size / (step + data_s), 2),
            "speedup": round(ref_step / step, 3),
            "warmup_s": round(warmup_s[name], 2),
            "achieved_gflops_per_s": round(gflops, 1),
            "peak_kind": "given" if args.peak_tflops else variant(name).peak,
            "fraction_of_peak": fraction(name, gflops),
            "phase_seconds": ({k: round(v, 5) for k, v in profiled[name]["phase_seconds"].items()}
                              if profiled[name] else None),
            "shares": shares(step, data_s, profiled[name]["fractions"] if profiled[name] else None),
        }
    if not args.no_memory:
        for name in trainers:
            results[name]["memory"] = measure_memory(preset, name, base, args.memory_timeout)
            log.info("  memory %s: %s", name, results[name]["memory"])
        ref_mem = results[BASELINE]["memory"].get("step_mib")
        for name in trainers:
            mem = results[name]["memory"].get("step_mib")
            results[name]["memory_ratio"] = round(mem / ref_mem, 3) if mem and ref_mem else None
    record["variants"] = results
    record["projection"] = projection(results, record["preset_batch_size"], config.batch_size)
    return record


def projection(results: dict[str, Any], preset_batch: int, batch: int) -> dict[str, Any]:
    """Days for the paper's schedule at the preset's batch, for the reference and the fastest variant (step
    time scales about linearly with the batch)."""
    best = min(results, key=lambda n: results[n]["step_s"])
    scale = preset_batch / batch
    return {
        "schedule_steps": PAPER_STEPS,
        "at_batch": preset_batch,
        "batch_scaling": "measured step time × preset batch / measured batch" if scale != 1 else "as measured",
        "reference_days": round(PAPER_STEPS * results[BASELINE]["step_s"] * scale / 86400, 1),
        "best_variant": best,
        "best_days": round(PAPER_STEPS * results[best]["step_s"] * scale / 86400, 1),
    }
