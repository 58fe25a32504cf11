"""The prepared GPU check (issue 14 item 4): one run, at most 8 minutes, on a GPU machine that has only this
repository and a Python with torch, torchvision, opencv, tensorboard and tqdm (no Ray: `--launcher local`).

    bench/gpu_check.sh                 # on the GPU machine; results in $OUT (or results/gpu/)
    bench/gpu_check.sh --cpu-smoke     # here: everything shrunk, every path but CUDA's exercised

What it measures, each section under a share of one time budget (a section that fails or runs out of time
is recorded with its reason and the next one runs):
1. environment — device, capability, memory, driver, torch/CUDA/cuDNN, TF32 switches, commit;
2. peak — an n×n×n matrix product in bf16 and fp32 (the achievable peak), beside the spec-sheet peak of
   known devices;
3. step — the loop's own step (`Trainer.launch`, values settled as `loop.train` settles them) of the paper's
   pool5 inversion at 227 px, batch 64, on the paper's CaffeNet architecture (`caffenet-random`: the same
   arithmetic as the user's CaffeNet), the balancing rule held open so every step updates D and G, in
   fp32, bf16, bf16 + channels_last, fp16 (GradScaler) and bf16 + channels_last + torch.compile:
   images/s, ms/step, peak memory, host syncs per step (`torch.cuda.set_sync_debug_mode`), achieved
   TFLOP/s from `torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls, forward and
   backward) against the measured and the spec-sheet peak, and the projected wall time of the paper's
   1M iterations;
4. loader — `repro.data.training_loader` (uint8, pinned, persistent workers) on the carried images, raw and
   pre-warped by `python -m repro.prewarp` (when present), and with GPU JPEG decode (`gpu_decode`, when the
   config has it): images/s, per worker, and the cores 3,000 images/s (and the step's rate) would need;
5. paper-pool5 — `python3 -m repro.train --launcher local --preset paper-pool5 --set encoder=alexnet --set
   comparator=alexnet --set train_data=…` for a few hundred steps with a grid (pretrained AlexNet weights
   from the carried cache; `alexnet-random`, said so, when they are not carried);
6. resume on CPU — the GPU run's checkpoint continued with `--resume RUN --set device=cpu` for one step.

Assets: the machine has no ../shared. The lead carries a repo-relative folder (default `shared-carry/`,
`--carry`): `shared-carry/assets/` (DEEPSIM_ASSETS layout; at least an image folder such as
`imagenet-1k-256/`) and `shared-carry/deepsim-cache/weights/alexnet_tv.pt` (DEEPSIM_CACHE layout, from
`make weights`). Missing pieces are reported in one line each; images are then synthesised (JPEG-encoded
gradients and noise, marked `synthetic` in the results) so every path still runs.

Outputs (at most 8 files, as the device tool returns them): `gpu_check.json` (every figure + provenance),
`summary.md`, `grid-paper-pool5.jpg`, and the shell wrapper's `gpu_check.log`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
TARGET_IMAGES_PER_S = 3000  # issue 14: the loader must feed ~3,000 images/s at 227 px
PAPER_ITERATIONS = 1_000_000

# Dense spec-sheet peaks in TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
SPEC_PEAKS = {
    "H200": {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67},
    "H100 PCIe": {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51},
    "H100": {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67},
    "A100": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "L40S": {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6},
    "L4": {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3},
    "A10": {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2},
    "RTX 4090": {"bf16": 165, "fp16": 165, "tf32": 82.6, "fp32": 82.6},
    "V100": {"fp16": 125, "fp32": 15.7},
    "T4": {"fp16": 65, "fp32": 8.1},
}


# ---- set-up -------------------------------------------------------------------------------------------------

def use_carried(carry: Path) -> list[str]:
    """Point the project at the carried assets and weights (before repro is imported); notes on what is missing."""
    notes = []
    assets, cache = carry / "assets", carry / "deepsim-cache"
    if assets.is_dir():
        os.environ.setdefault("DEEPSIM_ASSETS", str(assets))
    else:
        notes.append(f"no {assets}: shared assets not carried (eval/train images fall back to carried or "
                     "synthetic ones)")
    if (cache / "weights").is_dir():
        os.environ.setdefault("DEEPSIM_CACHE", str(cache))
    elif not (Path.home() / ".cache" / "deepsim" / "weights").is_dir():
        notes.append(f"no {cache}/weights: pretrained AlexNet not carried (paper-pool5 runs with alexnet-random)")
    return notes


def find_images(carry: Path) -> Path | None:
    """A folder of real images among the carried ones (the ILSVRC sample first)."""
    for candidate in (carry / "assets" / "imagenet-1k-256", carry / "images", carry / "assets" / "caltech101"):
        if candidate.is_dir() and any(candidate.rglob("*.jp*g")):
            return candidate
    shared = ROOT.parent / "shared" / "assets" / "imagenet-1k-256"  # a developer machine
    return shared if shared.is_dir() else None


def synthetic_images(folder: Path, count: int, side: int = 320) -> Path:
    """JPEGs of smooth gradients plus noise (decode cost close to photos'), for when no image is carried."""
    import torch
    from torchvision.io import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, side)
    for i in range(count):
        base = torch.rand(3, 1, 1, generator=generator) * ramp.view(1, 1, -1) + torch.rand(3, 1, 1, generator=generator) * ramp.view(1, -1, 1)
        image = (base / 2 + 0.15 * torch.rand(3, side, side, generator=generator)).clamp(0, 1)
        (folder / f"synthetic-{i:05d}.jpg").write_bytes(encode_jpeg((image * 255).to(torch.uint8), quality=90).numpy().tobytes())
    return folder


class Check:
    """The results, written after every section so that a run cut short still leaves what it measured."""

    def __init__(self, out: Path, budget_s: float, smoke: bool):
        self.out, self.smoke = out, smoke
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.results: dict[str, Any] = {"sections": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str, cap_s: float, reserve_s: float, body: Callable[[float], dict[str, Any]]) -> None:
        """Run `body(time_allowed)` with min(cap, time left − what later sections need); record its outcome."""
        allowed = min(cap_s, self.left() - reserve_s)
        start = time.monotonic()
        if allowed < 5:
            record = {"status": "skipped", "reason": f"out of time ({self.left():.0f} s left of the budget)"}
        else:
            print(f"== {name} (up to {allowed:.0f} s)", flush=True)

            def overrun(signum, frame):  # a section (e.g. a long compile) may not eat the later ones' time
                raise TimeoutError(f"section {name} ran past its {allowed + 15:.0f} s")

            previous = signal.signal(signal.SIGALRM, overrun)
            signal.setitimer(signal.ITIMER_REAL, allowed + 15)
            try:
                record = {"status": "ok", **body(allowed)}
            except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
                record = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0][:500],
                          "traceback": traceback.format_exc()[-3000:]}
                print(f"   failed: {record['error']}", flush=True)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        record["wall_s"] = round(time.monotonic() - start, 1)
        self.results["sections"][name] = record
        self.write()

    def write(self) -> None:
        self.results["total_wall_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))
        if "environment" in self.results:
            (self.out / "summary.md").write_text(summary(self.results))


# ---- sections -----------------------------------------------------------------------------------------------

def environment(device) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = "nvidia-smi unavailable"
        info["spec_peak_tflops"] = next((v for k, v in SPEC_PEAKS.items() if k in props.name), None)
    for module in ("cv2", "tensorboard", "tqdm", "torchvision", "onnxruntime"):
        try:
            __import__(module)
            info[f"has_{module}"] = True
        except ImportError:
            info[f"has_{module}"] = False
    return info


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, smoke: bool) -> dict[str, Any]:
    import torch

    n = 512 if smoke else 8192
    out = {"n": n}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        synchronize(device)
        repeats = 3 if smoke else 10
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        out[f"{name}_tflops"] = round(2 * n**3 * repeats / (time.perf_counter() - start) / 1e12, 2)
        del a, b
    return out


def step_config(smoke: bool, **options: str):
    """The paper's pool5 inversion on the CaffeNet architecture, the balancing rule held open."""
    from repro.config import make_config

    overrides = {"encoder": "caffenet-random", "comparator": "caffenet-random", "train_data": "unused",
                 "pause_d_below": "0", "pause_g_above": "inf", "verify_data": "false", **options}
    if smoke:
        overrides.update(resolution="64", generator_width="0.125", discriminator_width="0.25", batch_size="4")
    return make_config("paper-pool5", overrides)


VARIANTS = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "bf16+channels_last": {"amp": "bf16", "channels_last": "true"},
    "fp16+GradScaler": {"amp": "fp16"},
    "bf16+channels_last+compile": {"amp": "bf16", "channels_last": "true", "compile": "true"},
}


def time_variant(name: str, options: dict[str, str], device, smoke: bool, allowed_s: float,
                 flops: list[float]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from repro.loop import Session, Trainer

    config = step_config(smoke, device=device.type, **options)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.monotonic()
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="gpu-check-")), Session(show_progress=False))
    batch = torch.randint(0, 256, (config.batch_size, 3, config.resolution, config.resolution), dtype=torch.uint8)
    if device.type == "cuda":
        batch = batch.pin_memory()  # as the loader yields it
    if not flops:  # FLOPs of one full step (both phases), counted once on the first (eager) variant
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.step(batch)
        flops.append(float(counter.get_total_flops()))
    warmup = 1 if smoke else (4 if config.compile else 5)
    for _ in range(warmup):
        trainer.launch(batch)
    trainer.settle()
    synchronize(device)
    warm_s = time.monotonic() - started
    # timed: as loop.train runs it — launch every step, values settled by the next launch
    per_step_estimate = max(warm_s / (warmup + 2), 1e-3)
    steps = 2 if smoke else int(max(5, min(50, (allowed_s - warm_s) * 0.6 / per_step_estimate)))
    syncs = 0
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for _ in range(steps):
            trainer.launch(batch)
        synchronize(device)
        elapsed = time.perf_counter() - start
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode(0)
    values = trainer.settle()
    step_s = elapsed / steps
    record = {"steps": steps, "warmup": warmup, "warmup_s": round(warm_s, 1), "ms_per_step": round(step_s * 1e3, 2),
              "images_per_s": round(config.batch_size / step_s, 1),
              "projected_hours_1M_iterations": round(step_s * PAPER_ITERATIONS / 3600, 1),
              "host_syncs_per_step": round(syncs / steps, 2) if device.type == "cuda" else None,
              "losses_finite": all(math.isfinite(v) for v in values.values()),
              "last_values": {k: round(v, 5) for k, v in values.items() if k in ("feat", "adv", "img", "discr", "total")}}
    if flops:
        record["achieved_tflops"] = round(flops[0] / step_s / 1e12, 3)
    if device.type == "cuda":
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del trainer
    return record


def step_section(device, smoke: bool, allowed_s: float, names: list[str], shared: dict[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"resolution": 64 if smoke else 227, "batch": 4 if smoke else 64,
                           "architecture": "paper-pool5 on CaffeNet (caffenet-random), D on code, full width"
                           if not smoke else "paper-pool5 shrunk (64 px, widths 0.125/0.25, batch 4)"}
    deadline = time.monotonic() + allowed_s
    flops = shared.setdefault("flops", [])
    for name in names:
        left = deadline - time.monotonic()
        if left < 10:
            out[name] = {"status": "skipped", "reason": "out of time"}
            continue
        if name.startswith("bf16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            out[name] = {"status": "skipped", "reason": "this GPU has no bf16 (use the fp16+GradScaler row)"}
            continue
        print(f"   {name}", flush=True)
        try:
            out[name] = {"status": "ok", **time_variant(name, VARIANTS[name], device, smoke, left, flops)}
        except Exception as err:  # noqa: BLE001
            out[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0][:400],
                         "traceback": traceback.format_exc()[-2000:]}
            print(f"     failed: {out[name]['error']}", flush=True)
    if flops:
        out["flops_per_step"] = flops[0]
        peaks = shared.get("peaks", {})
        for name in names:
            row = out.get(name, {})
            if "achieved_tflops" in row:
                kind = "fp32" if name == "fp32" else ("fp16" if name.startswith("fp16") else "bf16")
                if peaks.get(f"{'fp32' if kind == 'fp32' else 'bf16'}_tflops"):
                    row["fraction_of_measured_matmul_peak"] = round(
                        row["achieved_tflops"] / peaks[f"{'fp32' if kind == 'fp32' else 'bf16'}_tflops"], 4)
                spec = shared.get("spec") or {}
                if spec.get(kind):
                    row["fraction_of_spec_peak"] = round(row["achieved_tflops"] / spec[kind], 4)
                    row["spec_peak_kind"] = kind
    return out


def loader_section(images: Path, device, smoke: bool, allowed_s: float, work: Path) -> dict[str, Any]:
    import torch

    from repro.config import Config, make_config
    from repro.data import training_loader

    cores = os.cpu_count() or 1
    workers = 2 if smoke else max(1, min(cores - 2, 12))
    resolution = 64 if smoke else 227
    sources: list[tuple[str, str, dict[str, str]]] = [("raw", str(images), {})]
    out: dict[str, Any] = {"images_folder": str(images), "workers": workers, "resolution": resolution}
    deadline = time.monotonic() + allowed_s
    try:
        import repro.prewarp  # noqa: F401

        prewarped = work / "prewarped"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "repro.prewarp", str(images), str(prewarped), "--resolution",
                               str(resolution), "--workers", str(max(1, cores - 1))], cwd=ROOT, capture_output=True,
                              text=True, timeout=max(10, allowed_s / 3))
        out["prewarp"] = {"rc": done.returncode, "wall_s": round(time.monotonic() - started, 1),
                          "tail": (done.stdout + done.stderr)[-400:]}
        if done.returncode == 0 and (prewarped / "train.txt").exists():
            sources.append(("prewarped", str(prewarped / "train.txt"), {}))
    except ImportError:
        out["prewarp"] = "repro.prewarp not present"
    except subprocess.TimeoutExpired:
        out["prewarp"] = "timed out"
    if device.type == "cuda" and "gpu_decode" in Config.__dataclass_fields__:
        sources.append(("prewarped+gpu_decode" if len(sources) > 1 else "raw+gpu_decode", sources[-1][1],
                        {"gpu_decode": "true"}))
    for name, source, extra in sources:
        left = deadline - time.monotonic()
        if left < 5:
            out[name] = {"status": "skipped", "reason": "out of time"}
            continue
        try:
            config = make_config("smoke", {"train_data": source, "resolution": str(resolution), "batch_size": "64",
                                           "num_workers": str(workers), "data_cache": "false", "verify_data": "false",
                                           "device": device.type, **extra})
            loader = training_loader(config, 0, 1, device)
            iterator = iter(loader)
            first = next(iterator)  # workers started, first batch decoded
            count, start = 0, time.perf_counter()
            budget = min(left * 0.8, 5 if smoke else 25)
            while time.perf_counter() - start < budget:
                try:
                    batch = next(iterator)
                except StopIteration:
                    iterator = iter(loader)
                    continue
                if batch.device.type == "cuda":
                    torch.cuda.synchronize(device)
                count += batch.shape[0]
            rate = count / (time.perf_counter() - start)
            per_worker = rate / workers if "gpu_decode" not in extra else None
            out[name] = {"status": "ok", "images_per_s": round(rate, 1), "batch_dtype": str(first.dtype),
                         "pinned": bool(first.is_pinned()) if first.device.type == "cpu" else None,
                         "images_per_s_per_worker": round(per_worker, 1) if per_worker else None,
                         "cores_for_3000_images_per_s": math.ceil(TARGET_IMAGES_PER_S / per_worker) if per_worker else None}
            del loader, iterator
        except Exception as err:  # noqa: BLE001
            out[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0][:400]}
    return out


def train_command(run_dir: Path, *settings: str) -> list[str]:
    argv = [sys.executable, "-m", "repro.train", "--launcher", "local", "--no-progress", "--run-dir", str(run_dir)]
    for setting in settings:
        argv += ["--set", setting]
    return argv


def paper_run_section(images: Path, train_source: str, device, smoke: bool, allowed_s: float, work: Path,
                      out_dir: Path, shared: dict[str, Any]) -> dict[str, Any]:
    from repro.weights import weights_path

    pretrained = weights_path("alexnet_tv").exists()
    net = "alexnet" if pretrained else "alexnet-random"
    steps = 3 if smoke else 300
    run_dir = work / "paper-pool5"
    settings = [f"encoder={net}", f"comparator={net}", f"train_data={train_source}", f"eval_data={images}",
                f"steps={steps}", "log_every=1" if smoke else "log_every=25", f"image_every={steps}",
                f"checkpoint_every={steps}", f"device={device.type}", "verify_data=false", "eval_images=16",
                f"num_workers={2 if smoke else max(1, min((os.cpu_count() or 2) - 2, 12))}"]
    if device.type == "cuda":
        settings += ["amp=bf16" if shared.get("bf16", True) else "amp=fp16", "channels_last=true"]
    if smoke:
        settings += ["resolution=64", "generator_width=0.125", "discriminator_width=0.25", "batch_size=4"]
    argv = train_command(run_dir, *settings) + ["--preset", "paper-pool5"]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=allowed_s)
    wall = time.monotonic() - started
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()] \
        if (run_dir / "stats.jsonl").exists() else []
    grid = run_dir / "grid-latest.jpg"
    if grid.exists():
        shutil.copy(grid, out_dir / "grid-paper-pool5.jpg")
    shared["paper_run"] = run_dir
    shared["paper_steps"] = steps
    return {"command": shlex.join(argv[1:]), "rc": done.returncode, "wall_s": round(wall, 1),
            "encoder": net, "pretrained": pretrained, "steps_logged": rows[-1]["step"] if rows else 0,
            "first": rows[0] if rows else None, "last": rows[-1] if rows else None,
            "images_per_s_last_window": rows[-1].get("images_per_s") if rows else None,
            "balance_events": [l for l in (done.stdout + done.stderr).splitlines() if "pause" in l or "resume" in l][:20],
            "grid": "grid-paper-pool5.jpg" if grid.exists() else None,
            "tail": (done.stdout + done.stderr)[-1500:] if done.returncode else (done.stdout + done.stderr)[-300:]}


def resume_section(allowed_s: float, shared: dict[str, Any]) -> dict[str, Any]:
    """The GPU run's last checkpoint continued on the CPU for one step, through the loop's own resume path
    (`Session(resume_state=…)`, what `--resume` does). Speed options (amp, channels_last, compile) are turned
    off for the CPU, as they change no state; everything else is the run's own config."""
    import dataclasses

    import torch

    from repro import checkpoint
    from repro.config import from_dict
    from repro.loop import Session, Trainer

    run_dir = shared.get("paper_run")
    found = checkpoint.load_latest(Path(run_dir) / "checkpoints") if run_dir else None
    if found is None:
        return {"status": "skipped", "reason": "no checkpoint of the paper-pool5 run"}
    folder, state = found
    saved_on = sorted({str(v.device) for v in state["model"].values()})  # checkpoint.load maps to the CPU
    config = dataclasses.replace(from_dict(json.loads(state["config"])), device="cpu", amp="off",
                                 channels_last=False, compile=False)
    started = time.monotonic()
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="gpu-check-resume-")),
                      Session(resume_state=state, show_progress=False))
    loaded = all(torch.equal(trainer.parts.model.state_dict()[k], v) for k, v in state["model"].items())
    batch = torch.randint(0, 256, (config.batch_size, 3, config.resolution, config.resolution), dtype=torch.uint8)
    values = trainer.step(batch)
    return {"checkpoint": str(folder), "resumed_from_step": int(state["step"]), "weights_equal_after_load": loaded,
            "checkpoint_holds_encoder": any(k.startswith("encoder.") for k in state["model"]),
            "checkpoint_mib": round((folder / checkpoint.STATE).stat().st_size / 2**20, 1),
            "cuda_rng_saved": state.get("cuda_rng") is not None, "loaded_tensors_on": saved_on,
            "cpu_step_s": round(time.monotonic() - started, 1),
            "cpu_step_finite": all(math.isfinite(v) for v in values.values()),
            "cpu_values": {k: round(v, 5) for k, v in values.items() if k in ("feat", "adv", "img", "discr", "total")}}


# ---- summary ------------------------------------------------------------------------------------------------

def summary(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    sections = results["sections"]
    lines = [f"# GPU check — {env.get('name', env.get('device', '?'))}", "",
             f"- when: {results['created']}; commit {results['commit']}; command `{results['command']}`",
             f"- torch {env.get('torch')} (CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}), driver "
             f"{env.get('driver', '-')}, {env.get('cpu_count')} CPU cores; total wall time {results.get('total_wall_s')} s",
             f"- mode: {'CPU SMOKE (shrunk; not a GPU result)' if results['smoke'] else 'GPU'}", ""]
    for note in results.get("notes", []):
        lines.append(f"- note: {note}")
    peak = sections.get("peak", {})
    if peak.get("status") == "ok":
        lines += ["", f"Matrix product {peak['n']}³: bf16 {peak.get('bf16_tflops')} TFLOP/s, fp32 "
                      f"{peak.get('fp32_tflops')} TFLOP/s (spec sheet: {env.get('spec_peak_tflops')})."]
    step = sections.get("step", {})
    if step.get("status") == "ok":
        lines += ["", f"## Step ({step.get('architecture')}, {step.get('resolution')} px, batch {step.get('batch')}; "
                      f"{step.get('flops_per_step', 0) / 1e12:.3f} TFLOP per step by FlopCounterMode)", "",
                  "| variant | ms/step | images/s | TFLOP/s | of spec peak | host syncs/step | peak GiB | 1M iterations (h) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in VARIANTS:
            row = step.get(name)
            if not isinstance(row, dict):
                continue
            if row.get("status") != "ok":
                lines.append(f"| {name} | {row.get('status')}: {row.get('reason', row.get('error', ''))[:80]} |||||||")
                continue
            lines.append(f"| {name} | {row['ms_per_step']} | {row['images_per_s']} | {row.get('achieved_tflops')} | "
                         f"{row.get('fraction_of_spec_peak', '-')} | {row.get('host_syncs_per_step')} | "
                         f"{row.get('peak_memory_gib', '-')} | {row['projected_hours_1M_iterations']} |")
    loader = sections.get("loader", {})
    if loader.get("status") == "ok":
        lines += ["", f"## Loader ({loader.get('workers')} workers, {loader.get('resolution')} px, {loader.get('images_folder')})", "",
                  "| source | images/s | per worker | cores for 3,000/s |", "|---|---|---|---|"]
        for name, row in loader.items():
            if isinstance(row, dict) and "images_per_s" in row:
                lines.append(f"| {name} | {row['images_per_s']} | {row.get('images_per_s_per_worker') or '-'} | "
                             f"{row.get('cores_for_3000_images_per_s') or '-'} |")
    for name in ("paper-pool5", "resume-on-cpu"):
        row = sections.get(name, {})
        if row:
            keep = {k: v for k, v in row.items() if k not in ("tail", "traceback", "first", "balance_events")}
            lines += ["", f"## {name}", "", "```", json.dumps(keep, indent=1, default=str)[:2500], "```"]
    failed = [k for k, v in sections.items() if v.get("status") != "ok"]
    lines += ["", f"Sections not ok: {', '.join(failed) or 'none'} (details in gpu_check.json)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default $OUT, else results/gpu)")
    parser.add_argument("--carry", type=Path, default=ROOT / "shared-carry", help="carried assets and weights")
    parser.add_argument("--budget-s", type=float, default=450, help="time budget of all sections together")
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, everything shrunk: exercise every path")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="step variants, comma-separated")
    args = parser.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or (tempfile.gettempdir() + "/gpu-check-smoke" if args.cpu_smoke
                                                     else ROOT / "results" / "gpu"))
    out.mkdir(parents=True, exist_ok=True)
    notes = use_carried(args.carry)
    import torch

    from repro.devices import DeviceError, pick_device

    check = Check(out, args.budget_s, args.cpu_smoke)
    results = check.results
    from repro import provenance

    results.update(provenance.record(shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])),
                   smoke=args.cpu_smoke, budget_s=args.budget_s, notes=notes)
    try:
        device = pick_device("cpu" if args.cpu_smoke else "cuda")
    except DeviceError as err:
        results["error"] = str(err)
        check.write()
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results["environment"] = environment(device)
    check.write()
    shared: dict[str, Any] = {"spec": results["environment"].get("spec_peak_tflops"),
                              "bf16": device.type != "cuda" or torch.cuda.is_bf16_supported()}
    work = Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    images = find_images(args.carry)
    if images is None:
        notes.append("no real images carried: synthetic JPEGs (loader and paper-pool5 figures are for timing only)")
        images = synthetic_images(work / "synthetic", 64 if args.cpu_smoke else 2048)
    results["images"] = str(images)
    names = [n for n in args.variants.split(",") if n]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    eager, compiled = [n for n in names if "compile" not in n], [n for n in names if "compile" in n]

    def peak(_allowed: float) -> dict[str, Any]:
        record = matmul_peak(device, args.cpu_smoke)
        shared["peaks"] = record
        return record

    def train_source() -> str:
        prewarped = work / "prewarped" / "train.txt"
        return str(prewarped) if prewarped.exists() else str(images)

    # (section, cap in s, body); each may use its cap, but leaves 80 % of the later caps to the later ones
    plan: list[tuple[str, float, Callable[[float], dict[str, Any]]]] = [
        ("peak", 20, peak),
        ("step", 100, lambda allowed: step_section(device, args.cpu_smoke, allowed, eager, shared)),
        ("loader", 50, lambda allowed: loader_section(images, device, args.cpu_smoke, allowed, work)),
        ("paper-pool5", 130, lambda allowed: paper_run_section(images, train_source(), device, args.cpu_smoke,
                                                               allowed, work, out, shared)),
        ("resume-on-cpu", 60, lambda allowed: resume_section(allowed, shared)),
    ]
    if compiled:
        plan.append(("step-compile", 90, lambda allowed: step_section(device, args.cpu_smoke, allowed, compiled, shared)))
    for i, (name, cap, body) in enumerate(plan):
        reserve = 0 if args.cpu_smoke else 0.8 * sum(c for _, c, _ in plan[i + 1:])
        check.section(name, cap if not args.cpu_smoke else 600, reserve, body)
    if "step-compile" in results["sections"]:
        step = results["sections"].setdefault("step", {})
        step.update({k: v for k, v in results["sections"]["step-compile"].items() if k in compiled})
    check.write()
    shutil.rmtree(work, ignore_errors=True)
    print((out / "summary.md").read_text())
    bad = [k for k, v in results["sections"].items() if v.get("status") == "failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
