"""Throughput of the full DeePSiM step, each speed option side by side with the plain eager fp32 step.

    python -m bench.throughput [--presets small-pool5,paper-pool5] [--resolutions 64,96,128,227]
                               [--variants channels_last,bf16,compile,channels_last+bf16]
                               [--steps 6] [--device auto|cpu|cuda] [--peak-tflops 989] [--out results/perf]
    python -m bench.throughput --ray-scaling [--scaling-steps 40]

This module is the command line; the work is in the modules it names:
- bench.variants: the loop's own `Trainer` per variant (`fp32` = eager, true fp32, NCHW, the reference), the
  balancing rule held open so that every step updates both D and G;
- bench.timing: `Trainer.step` timed with torch.utils.benchmark in interleaved rounds, the loader, Adam;
- bench.phases: the step's phases and the shares by network, from torch.profiler over the same step;
- bench.counters: FLOPs (FlopCounterMode) and host syncs per step; bench.memory: peak memory per variant,
  each in a fresh process;
- bench.record: one JSON record per (device, preset, resolution); bench.report: the Markdown;
- bench.machine: provenance and load average; bench.ray_scaling: Ray Train 2 workers vs 1.

Output: one JSON per (device, preset, resolution) under --out, with provenance (command, commit, device,
torch, threads, date, load average before and after), and `<out>/summary-<device>.md` rebuilt from every
JSON there.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from bench.machine import contended, load_average, provenance
from bench.memory import probe
from bench.ray_scaling import ray_scaling
from bench.record import bench_one
from bench.report import markdown, scaling_markdown, write_summary
from bench.variants import BASELINE, variant_overrides
from repro.errors import cli, user_input
from repro.provenance import git_commit

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small-pool5,paper-pool5", help="comma-separated preset names")
    parser.add_argument("--resolutions", default="64,96,128,227", help="comma-separated image sides")
    parser.add_argument("--variants", default="channels_last,bf16,compile,channels_last+bf16",
                        help="speed options (tf32, bf16, channels_last, compile) or '+'-joined combinations, "
                             "each timed against fp32 (the reference)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the timed steps are split into")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compilation)")
    parser.add_argument("--phase-steps", type=int, default=1, help="profiled steps for the phase shares (0 = none)")
    parser.add_argument("--batch-size", type=int, default=0, help="override the presets' batch size (0 = keep)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's peak TFLOP/s for the achieved fraction (e.g. 989 for H100 bf16 dense)")
    parser.add_argument("--data-images", type=int, default=256, help="training images the loader cycles over")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    parser.add_argument("--memory-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf")
    parser.add_argument("--ray-scaling", action="store_true", help="measure Ray Train 2 workers vs 1 instead")
    parser.add_argument("--scaling-preset", default="small-pool5")
    parser.add_argument("--scaling-steps", type=int, default=40)
    parser.add_argument("--scaling-log-every", type=int, default=10)
    parser.add_argument("--scaling-images", type=int, default=256)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # = python -m bench.memory JSON
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    git_commit()  # pin the commit of the code now running
    if args.memory_probe:
        spec = json.loads(args.memory_probe)
        print(json.dumps(probe(spec["preset"], spec["variant"], spec["overrides"])))
        return 0
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    with user_input(ValueError):  # --resolutions 64,abc
        resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != BASELINE]
    for name in variants:
        variant_overrides(name)  # unknown options fail before any work (UsageError: one line, exit 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    args.device = device.type
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(device)
    if device.type == "cpu" and contended(prov["load_average_before"]):
        log.warning("warning: load average %s on %s cores: timings are contended", prov["load_average_before"],
                    prov["cores"])
    if args.ray_scaling:
        rec = ray_scaling(args)
        rec["provenance"] = {**prov, "load_average_after": load_average()}
        (args.out / "ray-scaling.json").write_text(json.dumps(rec, indent=2))
        (args.out / "ray-scaling.md").write_text(scaling_markdown(rec))
        print(scaling_markdown(rec))
        return 0
    for preset in presets:
        for resolution in resolutions:
            rec = bench_one(preset, resolution, variants, args)
            rec["provenance"] = {**prov, "load_average_after": load_average()}
            path = args.out / f"{device.type}-{preset}-r{resolution}.json"
            path.write_text(json.dumps(rec, indent=2))
            print(markdown([rec]))
            log.info("wrote %s", path)
    log.info("wrote %s", write_summary(args.out, device.type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
