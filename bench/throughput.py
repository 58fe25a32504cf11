"""Throughput of the full DeePSiM step, each speed option side by side with the plain eager fp32 step.

    python -m bench.throughput [--presets small-pool5,paper-pool5] [--resolutions 64,96,128,227]
                               [--variants channels_last,bf16,compile,channels_last+bf16]
                               [--steps 6] [--device auto|cpu|cuda] [--peak-tflops 989] [--out results/perf]
    python -m bench.throughput --ray-scaling [--scaling-steps 40]

What is measured, per preset and resolution (one process, every variant side by side):
- the step: `repro.loop.Trainer.step` itself — G forward/backward, comparator on fake and real (C(x) reused
  from the encoder when comparator = encoder), D forward/backward, both Adam updates, the non-finite check.
  The balancing rule is held open (thresholds ±inf) so that every timed step is a full step with both
  updates. `reference` is the plain path: eager, fp32, NCHW (channels_last off, compile off, amp off).
  Variants are timed in interleaved rounds (reference, A, B, …, reference, A, B, …) so that load drifting
  on a shared machine hits all of them alike; figures are medians over the timed steps.
- data loading: the loop's own loader (`ImageFolder` with the config's cache, `make_loader` with its
  workers), on the first `--data-images` training images; one untimed pass fills the cache first (its
  rate is reported as cold decoding), then `next(batches)` is timed before every step.
- phase shares (explicit phase timers): a split replica of the same step on the same modules, where the
  chain rule is cut at the fake images (G's output becomes a leaf; comparator, D and image loss send
  their gradients to it; G's backward then runs from that gradient), so each phase is timed alone:
  comparator = encoder/C on real + C on fake forward and backward; generator = G forward, backward, Adam;
  discriminator = D on real and fake, its backward and Adam, D on fake for L_adv and its backward;
  other = the rest of the real step (loss arithmetic, non-finite check). The replica's phase fractions are
  scaled to the measured step time; with data loading they make the shares.
- peak memory: a fresh subprocess per variant (so nothing else is resident) runs one warm-up step, then
  records its resting memory and the peak over one more step. CPU: RSS (VmHWM after resetting it through
  /proc/self/clear_refs; `resource.ru_maxrss` where that is unavailable). CUDA:
  `torch.cuda.max_memory_allocated`. `step_mib` = peak − resting, the step's working memory.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one reference step (device independent; counts
  convolutions and matmuls forward and backward, not element-wise ops or Adam). Achieved GFLOP/s =
  FLOPs / step time for every variant (same arithmetic); with `--peak-tflops`, the fraction of that peak.
- CUDA only: host–device synchronisations per step, counted with `torch.cuda.set_sync_debug_mode`.
- Adam: milliseconds per `step()` of the generator's optimiser for the per-tensor loop, foreach and fused
  implementations (the loop uses fused).

Output: one JSON per (device, preset, resolution) under --out, with provenance (command, commit, device,
torch, threads, date, load average before and after), and `<out>/summary-<device>.md` rebuilt from every
JSON there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

from repro.config import Config, make_config
from repro.data import ImageFolder, infinite_batches, make_loader
from repro.loop import Balance, Trainer, resolve_folder
from repro.losses import adversarial_loss, discriminator_loss, feature_loss, image_loss
from repro.models import Inverter

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"channels_last": False, "compile": False, "amp": "off"}
OPTIONS = {"channels_last": {"channels_last": True}, "bf16": {"amp": "bf16"}, "compile": {"compile": True}}
PAPER_STEPS = 1_000_000  # the paper's schedule (generator iterations)
PHASES = ("data", "comparator", "generator", "discriminator", "other")


def variant_overrides(name: str) -> dict[str, Any]:
    """`reference`, or speed options joined by '+', e.g. `channels_last+bf16+compile`."""
    if name == "reference":
        return dict(REFERENCE)
    overrides = dict(REFERENCE)
    for option in name.split("+"):
        if option not in OPTIONS:
            raise SystemExit(f"error: unknown variant option {option!r} in {name!r}; "
                             f"use reference or {' / '.join(OPTIONS)} joined by '+'")
        overrides.update(OPTIONS[option])
    return overrides


# ---- the machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} cores"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def provenance(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from repro.provenance import git_commit

    return {
        "command": "python -m bench.throughput " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "commit": git_commit(),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_before": load_average(),
    }


# ---- memory ---------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_probe(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: one warm-up step, then resting memory and the peak over one step (MiB)."""
    trainer = make_trainer(preset, overrides)
    config = trainer.config
    real = torch.rand(config.batch_size, 3, config.resolution, config.resolution)
    trainer.step(real)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        resting = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        trainer.step(real)
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        resting = (_status_kib("VmRSS") or 0) * 1024
        if reset_peak_rss():
            trainer.step(real)
            peak, method = (_status_kib("VmHWM") or 0) * 1024, "RSS: VmHWM after /proc/self/clear_refs"
        else:
            trainer.step(real)
            peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "RSS: ru_maxrss (process peak)"
    mib = 1 << 20
    return {"peak_mib": round(peak / mib, 1), "resting_mib": round(resting / mib, 1),
            "step_mib": round((peak - resting) / mib, 1), "method": method}


def measure_memory(preset: str, overrides: dict[str, Any], timeout: float) -> dict[str, Any]:
    payload = json.dumps({"preset": preset, "overrides": overrides})
    try:
        done = subprocess.run([sys.executable, "-m", "bench.throughput", "--memory-probe", payload], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe exceeded {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- building and timing ----------------------------------------------------------------------------
# The paper presets need the user's CaffeNet and ILSVRC-2012; timing needs neither: the shipped AlexNet (same
# layer sizes at pool5, no LRN) and the shared Caltech-101 stand in, and the record says so (its config).
PAPER_STAND_IN = {"encoder": "alexnet", "comparator": "alexnet", "train_data": "caltech101"}


def bench_config(preset: str, overrides: dict[str, Any] | None = None) -> Config:
    stand_in = PAPER_STAND_IN if preset.startswith("paper-") else {}
    return make_config(preset, {**stand_in, **(overrides or {})})


def make_trainer(preset: str, overrides: dict[str, Any]) -> Trainer:
    config = bench_config(preset, overrides)
    trainer = Trainer(config, Path(tempfile.gettempdir()) / "deepsim-bench")
    # A full DeePSiM step every time: the balancing rule may not pause D or G while we time.
    trainer.balance = Balance(pause_d_below=-math.inf, resume_d_above=-math.inf, pause_g_above=math.inf)
    return trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseClock:
    """Explicit phase timers: wall time per named phase, the device synchronised at each boundary."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def split_step(trainer: Trainer, real: torch.Tensor, clock: PhaseClock) -> None:
    """The same arithmetic as `Trainer.step` (inversion models, both nets training), cut at the fake images
    so that comparator, generator and discriminator are timed alone (see the module docstring)."""
    cfg, parts, lambdas = trainer.config, trainer.parts, trainer.lambdas
    model, comparator, d = parts.model, parts.comparator, parts.discriminator
    real = real.to(trainer.device, non_blocking=True)
    if cfg.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    model.train()
    with clock("comparator"), torch.no_grad(), trainer.autocast():
        code = model.encoder(real)
        real_features = code if (comparator is None or parts.shares_features) else comparator(real)
    with clock("generator"), trainer.autocast():
        fake = model.generator(code)
    leaf = fake.detach().requires_grad_(True)
    if comparator is not None:
        with clock("comparator"):
            with trainer.autocast():
                fake_features = comparator(leaf)
            (lambdas["feat"] * feature_loss(fake_features.float(), real_features.float())).backward()
    if d is not None:
        with clock("discriminator"):
            d.train()
            d.requires_grad_(True)
            with trainer.autocast():
                logits_real, logits_generated = d(real), d(leaf.detach())
            d_loss = discriminator_loss(logits_real.float(), logits_generated.float())
            trainer.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            trainer.opt_d.step()
            d.requires_grad_(False)
            with trainer.autocast():
                logits_fake = d(leaf)
            (lambdas["adv"] * adversarial_loss(logits_fake.float())).backward()
    with clock("other"):
        if lambdas["img"] > 0:
            (lambdas["img"] * image_loss(leaf, real)).backward()
    with clock("generator"):
        trainer.opt_g.zero_grad(set_to_none=True)
        fake.float().backward(leaf.grad)
        trainer.opt_g.step()


def count_flops(trainer: Trainer, real: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

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


def adam_ms(trainer: Trainer, repeats: int = 5) -> dict[str, float]:
    """ms per Adam step on copies of G's parameters: per-tensor loop vs foreach vs fused."""
    out = {}
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
        synchronize(trainer.device)
        start = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        synchronize(trainer.device)
        out[name] = round(1000 * (time.perf_counter() - start) / repeats, 2)
        del opt, params
    return out


def data_stream(config: Config, images: int) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """The loop's loader on the first `images` training images; one untimed pass fills the cache."""
    dataset = ImageFolder(resolve_folder(config.train_data, False), config.resolution, train=True,
                          mirror=config.mirror, cache=config.data_cache, limit=max(images, 2 * config.batch_size))
    loader = make_loader(dataset, config.batch_size, seed=config.seed,
                         num_workers=None if config.num_workers < 0 else config.num_workers)
    batches = infinite_batches(loader)
    start = time.perf_counter()
    for _ in range(len(loader)):
        next(batches)
    cold = time.perf_counter() - start
    info = {"images": len(dataset), "cache": config.data_cache, "num_workers": loader.num_workers,
            "pin_memory": loader.pin_memory,
            "cold_decode_images_per_s": round(len(loader) * config.batch_size / cold, 1)}
    return (batch for _, _, batch in batches), info


def bench_one(preset: str, resolution: int, variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    base = {"resolution": resolution, "device": args.device, "verify_data": False, "threads": args.threads}
    if args.batch_size:
        base["batch_size"] = args.batch_size
    overrides = {name: {**base, **variant_overrides(name)} for name in ["reference", *variants]}
    log(f"{preset} @ {resolution}: building {', '.join(overrides)}")
    trainers = {name: make_trainer(preset, o) for name, o in overrides.items()}
    reference = trainers["reference"]
    config, device = reference.config, reference.device
    batches, data_info = data_stream(config, args.data_images)
    log(f"  data: {data_info}")

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
    log(f"  {record['flops_per_step'] / 1e9:.1f} GFLOP per step; Adam (G) ms: {record['adam_ms_per_step_G']}")

    first_step: dict[str, float] = {}
    for name, trainer in trainers.items():  # warm-up: compilation, allocator, caches
        start = time.perf_counter()
        for _ in range(args.warmup):
            trainer.step(next(batches))
        synchronize(device)
        first_step[name] = time.perf_counter() - start
        log(f"  warm-up {name}: {first_step[name]:.1f} s")

    step_s: dict[str, list[float]] = {name: [] for name in trainers}
    data_s: dict[str, list[float]] = {name: [] for name in trainers}
    per_round = max(1, math.ceil(args.steps / args.rounds))
    for round_index in range(args.rounds):
        for name, trainer in trainers.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                real = next(batches)
                t1 = time.perf_counter()
                trainer.step(real)  # ends in the step's one host sync (.tolist)
                synchronize(device)
                t2 = time.perf_counter()
                data_s[name].append(t1 - t0)
                step_s[name].append(t2 - t1)
        log(f"  round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{n} {statistics.median(step_s[n]):.3f} s" for n in trainers))

    phases: dict[str, dict[str, float] | None] = {}
    for name, trainer in trainers.items():
        if not isinstance(trainer.parts.model, Inverter) or args.phase_steps < 1:
            phases[name] = None
            continue
        clock = PhaseClock(device)
        split_step(trainer, next(batches), clock)  # warm the replica's own call patterns
        clock.seconds.clear()
        for _ in range(args.phase_steps):
            split_step(trainer, next(batches), clock)
        phases[name] = {k: v / args.phase_steps for k, v in clock.seconds.items()}

    ref_step = statistics.median(step_s["reference"])
    results = {}
    for name in trainers:
        step = statistics.median(step_s[name])
        data = statistics.median(data_s[name])
        total = step + data
        shares = None
        if phases[name]:
            compute = {k: phases[name].get(k, 0.0) for k in ("comparator", "generator", "discriminator")}
            split_total = sum(phases[name].values())
            shares = {"data": data / total}
            for k, v in compute.items():
                shares[k] = step * v / split_total / total
            shares["other"] = 1.0 - sum(shares.values())
            shares = {k: round(v, 4) for k, v in shares.items()}
        gflops = record["flops_per_step"] / step / 1e9
        results[name] = {
            "overrides": {k: overrides[name][k] for k in REFERENCE},
            "step_s": round(step, 4), "data_s": round(data, 5),
            "step_s_all": [round(s, 4) for s in step_s[name]],
            "images_per_s": round(config.batch_size / total, 2),
            "speedup": round(ref_step / step, 3),
            "warmup_s": round(first_step[name], 1),
            "achieved_gflops_per_s": round(gflops, 1),
            "fraction_of_peak": round(gflops / 1000 / args.peak_tflops, 4) if args.peak_tflops else None,
            "phase_seconds_split_replica": {k: round(v, 4) for k, v in (phases[name] or {}).items()} or None,
            "shares": shares,
        }
    if not args.no_memory:
        for name in trainers:
            results[name]["memory"] = measure_memory(preset, overrides[name], args.memory_timeout)
            log(f"  memory {name}: {results[name]['memory']}")
        ref_mem = results["reference"]["memory"].get("step_mib")
        for name in trainers:
            mem = results[name]["memory"].get("step_mib")
            results[name]["memory_ratio"] = round(mem / ref_mem, 3) if mem and ref_mem else None
    record["variants"] = results
    best = min(results, key=lambda n: results[n]["step_s"])
    scale = record["preset_batch_size"] / config.batch_size  # step time scales ~linearly with the batch
    record["projection"] = {
        "schedule_steps": PAPER_STEPS,
        "at_batch": record["preset_batch_size"],
        "batch_scaling": "measured step time × preset batch / measured batch" if scale != 1 else "as measured",
        "reference_days": round(PAPER_STEPS * results["reference"]["step_s"] * scale / 86400, 1),
        "best_variant": best,
        "best_days": round(PAPER_STEPS * results[best]["step_s"] * scale / 86400, 1),
    }
    return record


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- Ray Train scaling --------------------------------------------------------------------------------
def ray_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """images/s of `python -m repro.train` with 2 Ray workers vs 1 (and vs one local process using every
    core), read from the run's stats.jsonl, on a small image folder so the caches are warm after a few steps."""
    from repro.assets import asset_folder
    from repro.data import list_images

    work = Path(tempfile.mkdtemp(prefix="deepsim-scaling-"))
    folder = work / "images"
    folder.mkdir()
    for i, path in enumerate(list_images(asset_folder("caltech101", verify=False))[: args.scaling_images]):
        (folder / f"{i:05d}{path.suffix}").symlink_to(path)
    steps, log_every = args.scaling_steps, args.scaling_log_every
    common = ["--preset", args.scaling_preset, "--no-progress", "--set", f"steps={steps}",
              "--set", f"log_every={log_every}", "--set", f"image_every={steps}",
              "--set", f"checkpoint_every={steps}", "--set", f"train_data={folder}", "--set", "verify_data=false"]
    # Efficiency compares like with like: one worker on one core against two workers on one core each. The
    # one worker given every core (the launcher's default on a local runtime) and one plain process show
    # what the same machine does without data parallelism.
    runs = {
        "ray-1-worker": ["--launcher", "ray", "--num-workers", "1", "--cpus-per-worker", "1"],
        "ray-2-workers": ["--launcher", "ray", "--num-workers", "2", "--cpus-per-worker", "1"],
        "ray-1-worker-all-cores": ["--launcher", "ray", "--num-workers", "1"],
        "local-1-process": ["--launcher", "local", "--set", f"threads={os.cpu_count()}"],
    }
    out: dict[str, Any] = {"preset": args.scaling_preset, "steps": steps, "log_every": log_every,
                           "images": args.scaling_images, "runs": {}}
    for name, extra in runs.items():
        run_dir = work / name
        argv = [sys.executable, "-m", "repro.train", *extra, *common, "--run-dir", str(run_dir)]
        log(f"scaling: {name}: {' '.join(argv[1:])}")
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        stats_path = run_dir / "stats.jsonl"
        if done.returncode != 0 or not stats_path.exists():
            out["runs"][name] = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "wall_s": wall}
            continue
        rows = [json.loads(line) for line in stats_path.read_text().splitlines() if line.strip()]
        steady = [r["images_per_s"] for r in rows[1:]] or [r["images_per_s"] for r in rows]  # first window warms up
        out["runs"][name] = {"command": "python -m repro.train " + " ".join(extra + common), "wall_s": round(wall, 1),
                             "images_per_s_windows": [round(r["images_per_s"], 2) for r in rows],
                             "images_per_s": round(statistics.median(steady), 2)}
        log(f"  {out['runs'][name]}")
    one, two = (out["runs"].get(k, {}).get("images_per_s") for k in ("ray-1-worker", "ray-2-workers"))
    local = out["runs"].get("local-1-process", {}).get("images_per_s")
    out["efficiency_2_vs_1_workers"] = round(two / (2 * one), 3) if one and two else None
    out["speedup_2_vs_1_workers"] = round(two / one, 3) if one and two else None
    out["ray_2_workers_vs_local_process"] = round(two / local, 3) if local and two else None
    every = out["runs"].get("ray-1-worker-all-cores", {}).get("images_per_s")
    out["ray_2_workers_vs_1_worker_all_cores"] = round(two / every, 3) if every and two else None
    return out


# ---- reports ----------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["# Throughput of the full DeePSiM step (generated by `python -m bench.throughput`)", ""]
    for rec in records:
        prov = rec["provenance"]
        lines += [f"## {rec['preset']} @ {rec['resolution']} px, batch {rec['batch_size']} — {prov['device']}", "",
                  f"`{prov['command']}` · commit `{prov['commit']}` · torch {prov['torch']} · {prov['threads']} threads · "
                  f"{prov['date']} · load average before {prov['load_average_before']} after {prov['load_average_after']}",
                  "", f"{rec['flops_per_step'] / 1e9:.1f} GFLOP per step (FlopCounterMode); data: "
                  f"{rec['data']['images']} images, cache {rec['data']['cache']}, {rec['data']['num_workers']} workers, "
                  f"cold decoding {rec['data']['cold_decode_images_per_s']} images/s; Adam step (G) ms "
                  f"{rec['adam_ms_per_step_G']}; host syncs per step: {fmt(rec['host_syncs_per_step'])}", "",
                  "| variant | step s | images/s | speed-up | GFLOP/s | % of peak | step MiB | mem ratio | "
                  "data | comparator | generator | discriminator | other |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in rec["variants"].items():
            sh = v.get("shares") or {}
            mem = v.get("memory", {})
            peak = f"{100 * v['fraction_of_peak']:.1f}" if v.get("fraction_of_peak") else "–"
            lines.append(f"| {name} | {v['step_s']:.3f} | {v['images_per_s']:.1f} | {v['speedup']:.2f}× | "
                         f"{v['achieved_gflops_per_s']:.0f} | {peak} | {fmt(mem.get('step_mib'), 4)} | "
                         f"{fmt(v.get('memory_ratio'))} | "
                         + " | ".join(f"{100 * sh[k]:.0f}%" if k in sh else "–" for k in PHASES) + " |")
        proj = rec["projection"]
        lines += ["", f"Projected wall time of the paper's {proj['schedule_steps']:,} iterations at batch "
                  f"{proj['at_batch']} ({proj['batch_scaling']}): reference {proj['reference_days']} days, "
                  f"{proj['best_variant']} {proj['best_days']} days.", ""]
    return "\n".join(lines) + "\n"


def scaling_markdown(rec: dict[str, Any]) -> str:
    prov = rec["provenance"]
    lines = ["# Ray Train scaling on this machine (generated by `python -m bench.throughput --ray-scaling`)", "",
             f"`{prov['command']}` · commit `{prov['commit']}` · {prov['device']} · {prov['date']} · load average "
             f"before {prov['load_average_before']} after {prov['load_average_after']}", "",
             "| run | images/s (median of windows after the first) | windows | wall s |", "|---|---|---|---|"]
    for name, run in rec["runs"].items():
        lines.append(f"| {name} | {fmt(run.get('images_per_s'))} | {run.get('images_per_s_windows', run.get('error'))} | "
                     f"{run.get('wall_s')} |")
    lines += ["", f"2 workers (one core each) vs 1 worker on one core: speed-up {fmt(rec['speedup_2_vs_1_workers'])}, "
              f"efficiency {fmt(rec['efficiency_2_vs_1_workers'])}; 2 Ray workers vs 1 Ray worker on every core: "
              f"{fmt(rec.get('ray_2_workers_vs_1_worker_all_cores'))}×; vs one local process on every core: "
              f"{fmt(rec['ray_2_workers_vs_local_process'])}×", ""]
    return "\n".join(lines)


def write_summary(out: Path, device_type: str) -> Path:
    records = []
    for path in sorted(out.glob(f"{device_type}-*.json")):
        rec = json.loads(path.read_text())
        if "variants" in rec:
            records.append(rec)
    records.sort(key=lambda r: (r["preset"], r["resolution"]))
    summary = out / f"summary-{device_type}.md"
    summary.write_text(markdown(records))
    return summary


# ---- CLI ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small-pool5,paper-pool5", help="comma-separated preset names")
    parser.add_argument("--resolutions", default="64,96,128,227", help="comma-separated image sides")
    parser.add_argument("--variants", default="channels_last,bf16,compile,channels_last+bf16",
                        help="speed options (channels_last, bf16, compile) or '+'-joined combinations, each "
                             "timed against the reference")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the timed steps are split into")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compilation)")
    parser.add_argument("--phase-steps", type=int, default=1, help="steps of the split replica for phase shares")
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
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: run one probe, print JSON
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from repro.provenance import git_commit

    git_commit()  # pin the commit of the code now running
    if args.memory_probe:
        spec = json.loads(args.memory_probe)
        print(json.dumps(memory_probe(spec["preset"], spec["overrides"])))
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    args.device = device.type
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(args, device)
    if device.type == "cpu" and prov["load_average_before"][0] > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {prov['load_average_before']} on {os.cpu_count()} cores: timings are contended")
    if args.ray_scaling:
        rec = ray_scaling(args)
        rec["provenance"] = {**prov, "load_average_after": load_average()}
        (args.out / "ray-scaling.json").write_text(json.dumps(rec, indent=2))
        (args.out / "ray-scaling.md").write_text(scaling_markdown(rec))
        print(scaling_markdown(rec))
        return 0
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "reference"]
    for name in variants:
        variant_overrides(name)  # unknown options fail before any work
    for preset in presets:
        for resolution in resolutions:
            rec = bench_one(preset, resolution, variants, args)
            rec["provenance"] = {**prov, "load_average_after": load_average()}
            path = args.out / f"{device.type}-{preset}-r{resolution}.json"
            path.write_text(json.dumps(rec, indent=2))
            print(markdown([rec]))
            log(f"wrote {path}")
    log(f"wrote {write_summary(args.out, device.type)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
