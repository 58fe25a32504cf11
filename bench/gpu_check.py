"""The prepared GPU check (issue 24): one run of at most 4 minutes on a lent GPU machine that has only this
repository, a carried folder and a Python with torch and torchvision (no Ray, onnx2torch or lpips), so that
a failed first try leaves device time for a second.

    python -m bench.gpu_check --prepare          # here: fill .carry/gpu-check/ (≤ 30 MiB), once per commit
    bash bench/gpu_check.sh                      # there: results in $OUT (the exact call: bench/README.md)
    bash bench/gpu_check.sh --cpu-smoke          # here: every section shrunk, on the CPU, Ray & co. blocked

The carried folder (`--carry`, default `.carry/gpu-check/`, ignored by git) holds what the machine lacks:
`assets/imagenet-subset/` (the first CARRY_IMAGES evaluation images of ../shared/assets/imagenet-1k-256),
`deepsim-cache/weights/alexnet_tv.pt` (the pretrained AlexNet of `make weights`), `COMMIT` (the commit whose
tree travels, for when DEEPSIM_COMMIT is not passed) and `manifest.json` (sha256 of both).

Sections, in order, each under its own time cap, each recorded (ok, failed with its error, or skipped for
want of time) in `gpu_check.json` as soon as it ends, so a later failure or the hard stop loses nothing:
1. environment — device, capability, driver, torch/CUDA/cuDNN, the fp32 precision flags, which optional
   packages import, the commit (DEEPSIM_COMMIT, else the carry's COMMIT, else git);
2. peak — an 8192³ matrix product in true fp32 (TF32 off), TF32 and bf16: the peak each step row is held to;
3. step — the loop's own step (`Trainer.launch`, values settled as `loop.train` settles them) of the paper's
   pool5 inversion at 227 px, batch 64, full width, on the CaffeNet architecture (`caffenet-random`: the
   same arithmetic as the user's CaffeNet), built by bench/variants.py as the throughput bench builds it (the
   balancing rule held open so every step updates D and G); rows, the variants of that module, `fp32` (TF32
   off in cuBLAS and cuDNN), `tf32`, `bf16` (autocast) and `channels_last+bf16`: ms/step, images/s, achieved
   TFLOP/s (bench/counters.py's FlopCounterMode over one step: convolutions and matmuls, forward and
   backward) against the matching measured matmul peak, host syncs per step (bench/counters.py, one more
   step), peak memory, and the projected wall time of the paper's 1M iterations × 64 images;
4. loader — `repro.data.training_loader` (uint8, pinned, persistent workers) on the carried images: images/s,
   per worker, and the cores 3,000 images/s would need;
5. loader-gpu-decode — the same with `gpu_decode=true` (nvJPEG), in its own time;
6. paper-pool5 — `python -m repro.train --launcher local --preset paper-pool5` with the pretrained AlexNet
   as encoder and comparator (no CaffeNet weights travel; `alexnet-random` if none are carried), bf16 +
   channels_last, a few hundred steps bounded by `time_limit_min`, with a grid and a checkpoint;
7. resume-on-cpu — that checkpoint continued on the CPU for one step through the loop's resume path;
8. compile (optional, last) — `channels_last+bf16+compile` in a child process killed at its own bound; its
   failure does not fail the check.

Outputs in `--out` ($OUT on the device): `gpu_check.json` (every figure + provenance), `summary.md`,
`grid-paper-pool5.webp`, and the shell wrapper's `gpu_check.log`.
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
from pathlib import Path
from typing import Any, Callable

from repro.assets import asset_folder, sha256_file
from repro.config import from_dict, make_config
# Every section imports what it needs (torch, repro's loop, data and weights) inside itself, so that a section whose
# import fails on the device reports its own status while the others still run.
from repro import provenance
from repro.errors import UsageError, cli, user_input
from repro.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".carry" / "gpu-check"
CARRY_IMAGES = 320             # evaluation images carried (~7 MB); the loader cycles over them
CARRY_LIMIT = 30 * 2**20       # the machine takes 64 MiB of working tree + carry; the tree is ~17 MiB
BUDGET_S = 215                 # all sections; bench/gpu_check.sh stops the process at 235 s regardless
TARGET_IMAGES_PER_S = 3000     # issue 14: the loader must feed ~3,000 images/s at 227 px
PAPER_ITERATIONS, PAPER_BATCH = 1_000_000, 64
OPTIONAL = {"compile"}         # sections whose failure leaves the exit status 0
COMPILE_MIN_S = 30             # the compile section runs only with this much of the budget left

# Dense spec-sheet peaks in TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
SPEC_PEAKS = {
    "H200": {"bf16": 989, "tf32": 494, "fp32": 67},
    "H100 PCIe": {"bf16": 756, "tf32": 378, "fp32": 51},
    "H100": {"bf16": 989, "tf32": 494, "fp32": 67},
    "A100": {"bf16": 312, "tf32": 156, "fp32": 19.5},
    "L40S": {"bf16": 362, "tf32": 183, "fp32": 91.6},
    "L4": {"bf16": 121, "tf32": 60, "fp32": 30.3},
}

# the step rows, variants of bench/variants.py (config fields, fp32 mode of cuBLAS/cuDNN, peak); the compiled
# row runs last, in a child process
STEP_ROWS = ("fp32", "tf32", "bf16", "channels_last+bf16")
COMPILE_ROW = "channels_last+bf16+compile"


# ---- the carried folder -------------------------------------------------------------------------------------

def prepare_carry(dest: Path, n_images: int = CARRY_IMAGES) -> dict[str, Any]:
    """Fill `dest` afresh with the first `n_images` evaluation images, the pretrained AlexNet and the commit;
    returns its manifest. Raises ValueError when the folder would pass CARRY_LIMIT."""
    from repro.data import list_images, listing_sha256
    from repro.weights import weights_path

    source = asset_folder("imagenet-1k-256")  # its manifest hash checked: the carried images are those
    weights = weights_path("alexnet_tv")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `make weights` once before preparing the carry folder")
    shutil.rmtree(dest, ignore_errors=True)
    images = dest / "assets" / "imagenet-subset"
    images.mkdir(parents=True)
    for path in list_images(source)[:n_images]:
        shutil.copy2(path, images / path.name)
    (dest / "deepsim-cache" / "weights").mkdir(parents=True)
    shutil.copy2(weights, dest / "deepsim-cache" / "weights" / weights.name)
    commit = git_commit()
    (dest / "COMMIT").write_text(commit + "\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    manifest = {"commit": commit, "images": f"first {n_images} of {source} (sorted)",
                "images_listing_sha256": listing_sha256(str(images)), "weights": weights.name,
                "weights_sha256": sha256_file(weights), "bytes": size}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if size > CARRY_LIMIT:
        raise ValueError(f"{dest} holds {size / 2**20:.1f} MiB, over {CARRY_LIMIT / 2**20:.0f} MiB: carry fewer "
                         "images (--images N)")
    return manifest


def use_carried(carry: Path) -> list[str]:
    """Point the project at the carried images, weights and commit (before repro is imported); one note per
    missing piece."""
    notes = []
    if (carry / "assets").is_dir():
        os.environ.setdefault("DEEPSIM_ASSETS", str(carry / "assets"))
    if (carry / "deepsim-cache" / "weights").is_dir():
        os.environ.setdefault("DEEPSIM_CACHE", str(carry / "deepsim-cache"))
    elif not (Path.home() / ".cache" / "deepsim" / "weights").is_dir():
        notes.append(f"no {carry}/deepsim-cache/weights: pretrained AlexNet not carried (paper-pool5 runs "
                     "alexnet-random)")
    if not os.environ.get("DEEPSIM_COMMIT") and (carry / "COMMIT").is_file():
        os.environ["DEEPSIM_COMMIT"] = (carry / "COMMIT").read_text().strip()
        notes.append("DEEPSIM_COMMIT not passed: the commit is the carry folder's COMMIT, written when it was "
                     "prepared")
    return notes


def commit_source(notes: list[str]) -> str:
    """Where the recorded commit comes from (`repro.provenance.git_commit` asks git first)."""
    if (ROOT / ".git").exists():
        return "git"
    if any("carry folder's COMMIT" in note for note in notes):
        return "the carry folder's COMMIT"
    return "DEEPSIM_COMMIT" if os.environ.get("DEEPSIM_COMMIT") else "unknown"


def find_images(carry: Path) -> Path | None:
    """The carried evaluation images, else the shared ones of a developer machine."""
    for candidate in (carry / "assets" / "imagenet-subset", ROOT.parent / "shared" / "assets" / "imagenet-1k-256"):
        if candidate.is_dir() and any(candidate.glob("*.jp*g")):
            return candidate
    return None


# ---- the record ---------------------------------------------------------------------------------------------

class Check:
    """The results, written after every section so that a run cut short still leaves what it measured."""

    def __init__(self, out: Path, budget_s: float, min_section_s: float = 5, grace_s: float = 5):
        self.out, self.min_section_s, self.grace_s = out, min_section_s, grace_s
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.results: dict[str, Any] = {"sections": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str, cap_s: float, body: Callable[[float], dict[str, Any]]) -> None:
        """Run `body(time_allowed)`, allowed min(cap, time left), and record its outcome; a body that runs
        `grace_s` past its allowance is interrupted (SIGALRM) so that it cannot eat the later sections' time."""
        allowed = min(cap_s, self.left())
        start = time.monotonic()
        if allowed < self.min_section_s:
            record = {"status": "skipped", "reason": f"out of time ({self.left():.0f} s of the budget left)"}
        else:
            print(f"== {name} (up to {allowed:.0f} s)", flush=True)

            def overrun(signum, frame):
                raise TimeoutError(f"section {name} ran past its {allowed:.0f} s")

            previous = signal.signal(signal.SIGALRM, overrun)
            signal.setitimer(signal.ITIMER_REAL, allowed + self.grace_s)
            try:
                record = {"status": "ok", **body(allowed)}
            except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
                record = {"status": "failed", "error": one_line(err), "traceback": traceback.format_exc()[-3000:]}
                print(f"   failed: {record['error']}", flush=True)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        record["cap_s"], record["wall_s"] = round(cap_s, 1), round(time.monotonic() - start, 1)
        self.results["sections"][name] = record
        print(f"   {name}: {record['status']} ({record['wall_s']} s)", flush=True)
        self.write()

    def write(self) -> None:
        self.results["total_wall_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        if "environment" in self.results:
            (self.out / "summary.md").write_text(summary(self.results))


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:500]


def significant(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits (a CPU smoke's TFLOP/s would round to 0 at a fixed number of places)."""
    return float(f"{x:.{digits}g}")


# ---- sections -----------------------------------------------------------------------------------------------

def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device) -> dict[str, Any]:
    import torch

    from bench import variants

    info: dict[str, Any] = {
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "fp32_flags_default": variants.fp32_flags(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = "nvidia-smi unavailable"
        info["spec_peak_tflops"] = next((v for k, v in SPEC_PEAKS.items() if k in props.name), None)
    for module in ("ray", "onnx2torch", "lpips", "cv2", "tensorboard", "tqdm", "onnxruntime"):
        try:
            __import__(module)
            info[f"has_{module}"] = True
        except ImportError:
            info[f"has_{module}"] = False
    return info


def matmul_peak(device, smoke: bool) -> dict[str, Any]:
    """TFLOP/s of an n×n×n product in each variant's precision (fp32, tf32, bf16): `bench.counters.matmul_peak`,
    the one the CPU bench measures too."""
    from bench.counters import matmul_peak as measure

    return measure(device, 256 if smoke else 8192)


def step_overrides(device, smoke: bool) -> dict[str, Any]:
    """The paper's pool5 inversion on the CaffeNet architecture (the variant adds its fields)."""
    overrides = {"encoder": "caffenet-random", "comparator": "caffenet-random", "train_data": "unused",
                 "verify_data": False, "device": device.type}
    if smoke:
        overrides.update(resolution=64, generator_width=0.125, discriminator_width=0.25, batch_size=4)
    return overrides


def time_variant(name: str, device, smoke: bool, allowed_s: float, shared: dict[str, Any]) -> dict[str, Any]:
    """One step row: warm-up, then as many steps as fit ~half the allowance, launched as `loop.train` does (each
    step's values read back at the next, so no host sync per step); then one more step counting host syncs."""
    import torch

    from bench import variants
    from bench.counters import count_flops, count_syncs

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.monotonic()
    trainer = variants.make_trainer("paper-pool5", name, step_overrides(device, smoke))
    config = trainer.config
    batch = torch.randint(0, 256, (config.batch_size, 3, config.resolution, config.resolution), dtype=torch.uint8)
    if device.type == "cuda":
        batch = batch.pin_memory()  # as the loader yields it
    if "flops" not in shared:  # FLOPs of one full step (both phases), counted once, on the first row
        shared["flops"] = float(count_flops(trainer, batch))
    warmup = 1 if smoke else (3 if config.compile else 4)
    for _ in range(warmup):
        trainer.launch(batch)
    trainer.settle()
    synchronize(device)
    warm_s = time.monotonic() - started
    per_step = max(warm_s / (warmup + 3), 1e-3)  # an over-estimate: warm-up steps include cuDNN's search
    steps = 2 if smoke else int(max(5, min(60, (allowed_s - warm_s) * 0.5 / per_step)))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.launch(batch)
    synchronize(device)
    elapsed = time.perf_counter() - start
    values = trainer.settle()
    syncs = count_syncs(trainer, batch)
    with variants.fp32_mode(trainer.fp32):
        flags = variants.fp32_flags()
    step_s = elapsed / steps
    record: dict[str, Any] = {
        "steps": steps, "warmup": warmup, "warmup_s": round(warm_s, 1), "fp32_flags": flags,
        "ms_per_step": round(step_s * 1e3, 2), "images_per_s": round(config.batch_size / step_s, 1),
        "projected_days_1M_iterations_x64": round(step_s * PAPER_BATCH / config.batch_size * PAPER_ITERATIONS / 86400, 2),
        "host_syncs_per_step": syncs,
        "losses_finite": all(math.isfinite(v) for v in values.values()),
        "last_values": {k: round(v, 5) for k, v in values.items() if k in ("feat", "adv", "img", "discr", "total")}}
    record["achieved_tflops"] = significant(shared["flops"] / step_s / 1e12)
    kind = variants.variant(name).peak
    peak = shared.get("peaks", {}).get(f"{kind}_tflops")
    if peak:
        record["peak_kind"], record["fraction_of_matmul_peak"] = kind, significant(record["achieved_tflops"] / peak, 3)
    if device.type == "cuda":
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del trainer
    return record


def step_section(device, smoke: bool, allowed_s: float, shared: dict[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "resolution": 64 if smoke else 227, "batch": 4 if smoke else 64,
        "architecture": "paper-pool5 shrunk (64 px, widths 0.125/0.25, batch 4)" if smoke else
                        "paper-pool5 on CaffeNet (caffenet-random), D on code, full width"}
    deadline = time.monotonic() + allowed_s
    for i, name in enumerate(STEP_ROWS):
        left = deadline - time.monotonic()
        share = left / (len(STEP_ROWS) - i)  # what is left, split evenly over the rows still to run
        if share < 5:
            out[name] = {"status": "skipped", "reason": f"out of time ({left:.0f} s left for {len(STEP_ROWS) - i} rows)"}
            continue
        if "bf16" in name and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            out[name] = {"status": "skipped", "reason": "this GPU has no bf16"}
            continue
        print(f"   {name} (up to {share:.0f} s)", flush=True)
        try:
            out[name] = {"status": "ok", **time_variant(name, device, smoke, share, shared)}
        except Exception as err:  # noqa: BLE001 - the next row still runs
            out[name] = {"status": "failed", "error": one_line(err), "traceback": traceback.format_exc()[-2000:]}
            print(f"     failed: {out[name]['error']}", flush=True)
    out["flops_per_step"] = shared.get("flops")
    fp32, fast = out.get("fp32", {}), out.get("channels_last+bf16", {})
    if fp32.get("status") == "ok" and fast.get("status") == "ok":
        out["speedup_channels_last_bf16_vs_fp32"] = round(fp32["ms_per_step"] / fast["ms_per_step"], 2)
    return out


def compile_section(device, smoke: bool, allowed_s: float, shared: dict[str, Any]) -> dict[str, Any]:
    """The compiled row in a child process, killed at the bound: a compile that hangs cannot stop the check."""
    argv = [sys.executable, "-m", "bench.gpu_check", "--compile-row", "--device", device.type,
            "--peak-bf16", str(shared.get("peaks", {}).get("bf16_tflops", 0))]
    if smoke:
        argv.append("--cpu-smoke")
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=allowed_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"compile did not finish within its bound of {allowed_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"status": "failed", "error": f"exit {done.returncode}", "tail": (done.stdout + done.stderr)[-1500:]}
    return json.loads(lines[-1])


def compile_row(device_type: str, smoke: bool, peak_bf16: float) -> int:
    """`--compile-row`: time the compiled row in this process and print it as the last line of JSON."""
    import torch

    from repro.devices import pick_device

    device = pick_device(device_type)
    shared: dict[str, Any] = {"peaks": {"bf16_tflops": peak_bf16} if peak_bf16 else {}}
    if smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    row = time_variant(COMPILE_ROW, device, smoke, 600, shared)
    print(json.dumps({COMPILE_ROW: row}, default=str))
    return 0


def loader_workers(smoke: bool) -> int:
    return 2 if smoke else max(1, min((os.cpu_count() or 2) - 2, 12))


def loader_section(images: Path, device, smoke: bool, allowed_s: float, gpu_decode: bool) -> dict[str, Any]:
    """Batches of 64 at 227 px from `training_loader` as the loop reads them, for ~60 % of the allowance after
    the first batch (workers started). `gpu_decode` on the CPU smoke: the same `GpuDecoded` path with
    torchvision's CPU decoder (training_loader refuses gpu_decode without CUDA)."""
    import torch

    from repro.data import EncodedFolder, GpuDecoded, listing, make_loader, resolve_source, training_loader

    workers, resolution = loader_workers(smoke), 64 if smoke else 227
    config = make_config("smoke", {"train_data": str(images), "resolution": str(resolution), "batch_size": "64",
                                   "num_workers": str(workers), "data_cache": "false", "verify_data": "false",
                                   "device": device.type, "gpu_decode": str(gpu_decode and device.type == "cuda").lower()})
    if gpu_decode and device.type != "cuda":
        dataset = EncodedFolder(listing(resolve_source(config.train_data)), resolution, train=True, mirror=True,
                                cache=False, uint8=True)
        loader = GpuDecoded(make_loader(dataset, 64, num_workers=workers, persistent=True, pin=False), device,
                            dataset.warp, resolution)
    else:
        loader = training_loader(config, 0, 1, device)
    if len(loader) == 0:
        raise ValueError(f"{images} holds fewer images than one batch of 64")
    started = time.monotonic()
    iterator = iter(loader)
    first = next(iterator)
    first_s = time.monotonic() - started
    count, start = 0, time.perf_counter()
    budget = min(3 if smoke else 30, max(1.0, (allowed_s - first_s) * 0.6))
    while time.perf_counter() - start < budget:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        count += batch.shape[0]
    rate = count / (time.perf_counter() - start)
    out = {"images_folder": str(images), "workers": workers, "resolution": resolution,
           "decode": ("nvJPEG on the GPU" if device.type == "cuda" else "torchvision on the CPU (smoke)")
           if gpu_decode else "OpenCV in the loader workers",
           "first_batch_s": round(first_s, 2), "timed_s": round(budget, 1), "images": count,
           "images_per_s": round(rate, 1), "batch": [str(first.dtype), str(first.device), list(first.shape)],
           "pinned": bool(first.is_pinned()) if first.device.type == "cpu" else None}
    if not gpu_decode:
        out["images_per_s_per_worker"] = round(rate / workers, 1)
        out["cores_for_3000_images_per_s"] = math.ceil(TARGET_IMAGES_PER_S / max(rate / workers, 1e-9))
    del iterator, loader
    return out


def paper_run_section(images: Path, device, smoke: bool, allowed_s: float, work: Path, out_dir: Path,
                      shared: dict[str, Any]) -> dict[str, Any]:
    from repro.grids import FIGURE_SUFFIX
    from repro.weights import weights_path

    pretrained = weights_path("alexnet_tv").exists()
    net = "alexnet" if pretrained else "alexnet-random"
    steps = 3 if smoke else 300
    run_dir = work / "paper-pool5"
    # stop (with its grid and checkpoint) early enough for the process to end inside the allowance
    minutes = max(0.1, (allowed_s - 25) / 60)
    settings = [f"encoder={net}", f"comparator={net}", f"train_data={images}", f"eval_data={images}",
                f"steps={steps}", "log_every=1" if smoke else "log_every=25", f"image_every={steps}",
                f"checkpoint_every={steps}", f"device={device.type}", "verify_data=false", "eval_images=16",
                f"num_workers={loader_workers(smoke)}", f"time_limit_min={minutes:.2f}"]
    if device.type == "cuda":
        settings += ["amp=bf16", "channels_last=true"]
    if smoke:
        settings += ["resolution=64", "generator_width=0.125", "discriminator_width=0.25", "batch_size=4"]
    argv = [sys.executable, "-m", "repro.train", "--launcher", "local", "--no-progress", "--run-dir", str(run_dir),
            "--preset", "paper-pool5"]
    for setting in settings:
        argv += ["--set", setting]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=allowed_s)
    wall = time.monotonic() - started
    stats = run_dir / "stats.jsonl"
    rows = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    grid = run_dir / f"grid-latest{FIGURE_SUFFIX}"
    if grid.exists():
        shutil.copy(grid, out_dir / f"grid-paper-pool5{FIGURE_SUFFIX}")
    shared["paper_run"] = run_dir
    output = done.stdout + done.stderr
    record = {"command": shlex.join(["python", *argv[1:]]), "rc": done.returncode, "process_wall_s": round(wall, 1),
              "encoder": net, "pretrained": pretrained, "steps_planned": steps,
              "steps_logged": rows[-1]["step"] if rows else 0, "first": rows[0] if rows else None,
              "last": rows[-1] if rows else None,
              "images_per_s_last_window": rows[-1].get("images_per_s") if rows else None,
              "balance_events": [line for line in output.splitlines() if "pause" in line or "resume" in line][:20],
              "grid": f"grid-paper-pool5{FIGURE_SUFFIX}" if grid.exists() else None, "tail": output[-1500:]}
    if done.returncode != 0:
        raise RuntimeError(f"repro.train exited {done.returncode}: {output.strip().splitlines()[-1:]}")
    return record


def resume_section(shared: dict[str, Any]) -> dict[str, Any]:
    """The GPU run's last checkpoint continued on the CPU for one step, through the loop's own resume path
    (`Session(resume_state=…)`, what `--resume` does). Speed options (amp, channels_last, compile) are turned
    off for the CPU, as they change no state; everything else is the run's own config."""
    import dataclasses

    import torch

    from repro import checkpoint
    from repro.loop import Session, Trainer

    run_dir = shared.get("paper_run")
    found = checkpoint.load_latest(Path(run_dir) / "checkpoints") if run_dir else None
    if found is None:
        raise FileNotFoundError("no checkpoint of the paper-pool5 run to resume")
    folder, state = found
    config = dataclasses.replace(from_dict(json.loads(state["config"])), device="cpu", amp="off",
                                 channels_last=False, compile=False)
    started = time.monotonic()
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="gpu-check-resume-")),
                      Session(resume_state=state, show_progress=False))
    loaded = all(torch.equal(trainer.parts.model.state_dict()[k], v) for k, v in state["model"].items())
    batch = torch.randint(0, 256, (config.batch_size, 3, config.resolution, config.resolution), dtype=torch.uint8)
    values = trainer.step(batch)
    finite = all(math.isfinite(v) for v in values.values())
    record = {"checkpoint": str(folder), "resumed_from_step": int(state["step"]), "weights_equal_after_load": loaded,
              "saved_on": str(json.loads(state["config"]).get("device")),
              "checkpoint_mib": round((folder / checkpoint.STATE).stat().st_size / 2**20, 1),
              "cuda_rng_saved": state.get("cuda_rng") is not None, "cpu_step_s": round(time.monotonic() - started, 1),
              "cpu_step_finite": finite,
              "cpu_values": {k: round(v, 5) for k, v in values.items() if k in ("feat", "adv", "img", "discr", "total")}}
    if not (loaded and finite):
        raise RuntimeError(f"resumed weights equal: {loaded}; CPU step finite: {finite}")
    return record


# ---- summary ------------------------------------------------------------------------------------------------

def summary(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    sections = results["sections"]
    lines = [f"# GPU check — {env.get('name', env.get('device', '?'))}", "",
             f"- when: {results['created']}; commit {results['commit']}; command `{results['command']}`",
             f"- torch {env.get('torch')} (CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}), driver "
             f"{env.get('driver', '-')}, {env.get('cpu_count')} CPU cores; total wall time {results.get('total_wall_s')} s",
             f"- mode: {'CPU SMOKE (shrunk; not a GPU result)' if results['smoke'] else 'GPU'}",
             f"- sections: " + ", ".join(f"{k} {v.get('status')}" for k, v in sections.items())]
    lines += [f"- note: {note}" for note in results.get("notes", [])]
    peak = sections.get("peak", {})
    if peak.get("status") == "ok":
        lines += ["", f"Matrix product {peak['n']}³: fp32 {peak.get('fp32_tflops')}, TF32 {peak.get('tf32_tflops')}, "
                      f"bf16 {peak.get('bf16_tflops')} TFLOP/s (spec sheet: {env.get('spec_peak_tflops')})."]
    step = dict(sections.get("step", {}))
    step.update({k: v for k, v in sections.get("compile", {}).items() if k == COMPILE_ROW})
    if step.get("status") == "ok":
        flops = step.get("flops_per_step") or 0
        lines += ["", f"## Step ({step.get('architecture')}, {step.get('resolution')} px, batch {step.get('batch')}; "
                      f"{flops / 1e12:.3f} TFLOP per step by FlopCounterMode)", "",
                  "| row | ms/step | images/s | TFLOP/s | of matmul peak | host syncs/step | peak GiB | 1M × 64 (days) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in (*STEP_ROWS, COMPILE_ROW):
            row = step.get(name)
            if not isinstance(row, dict):
                continue
            if row.get("status", "ok") != "ok":
                lines.append(f"| {name} | {row.get('status')}: {str(row.get('reason', row.get('error', '')))[:80]} |||||||")
                continue
            lines.append(f"| {name} | {row['ms_per_step']} | {row['images_per_s']} | {row.get('achieved_tflops')} | "
                         f"{row.get('fraction_of_matmul_peak', '-')} ({row.get('peak_kind', '-')}) | "
                         f"{row.get('host_syncs_per_step')} | {row.get('peak_memory_gib', '-')} | "
                         f"{row['projected_days_1M_iterations_x64']} |")
        if "speedup_channels_last_bf16_vs_fp32" in step:
            lines += ["", f"channels_last+bf16 vs true fp32: {step['speedup_channels_last_bf16_vs_fp32']}×."]
    for name in ("loader", "loader-gpu-decode"):
        row = sections.get(name, {})
        if row.get("status") == "ok":
            lines += ["", f"## {name}: {row['images_per_s']} images/s ({row['decode']}, {row['workers']} workers, "
                          f"{row['resolution']} px; per worker {row.get('images_per_s_per_worker', '-')}; cores for "
                          f"3,000/s {row.get('cores_for_3000_images_per_s', '-')})"]
    for name in ("paper-pool5", "resume-on-cpu"):
        row = sections.get(name, {})
        if row:
            keep = {k: v for k, v in row.items() if k not in ("tail", "traceback", "first", "balance_events")}
            lines += ["", f"## {name}", "", "```", json.dumps(keep, indent=1, default=str)[:2500], "```"]
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------------------

@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default $OUT, else results/gpu, or a temporary "
                                                 "folder with --cpu-smoke)")
    parser.add_argument("--carry", type=Path, default=CARRY, help=f"the carried folder (default {CARRY.relative_to(ROOT)})")
    parser.add_argument("--prepare", action="store_true", help="fill the carried folder here and exit")
    parser.add_argument("--images", type=int, default=CARRY_IMAGES, help="images to carry (with --prepare)")
    parser.add_argument("--budget-s", type=float, help=f"time budget of all sections (default {BUDGET_S} s; "
                                                      "--cpu-smoke: 1000 s)")
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, everything shrunk: exercise every path")
    parser.add_argument("--no-compile", action="store_true", help="leave out the optional compile section")
    parser.add_argument("--compile-row", action="store_true", help=argparse.SUPPRESS)  # the compile child
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--peak-bf16", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_row:
        return compile_row(args.device, args.cpu_smoke, args.peak_bf16)
    if args.prepare:
        with user_input(FileNotFoundError, ValueError, RuntimeError):  # no weights, no assets, over the limit
            manifest = prepare_carry(args.carry, args.images)
        print(f"{args.carry}: {manifest['bytes'] / 2**20:.1f} MiB ({args.images} images + {manifest['weights']}), "
              f"commit {manifest['commit']}. The device call (bench/README.md):")
        carried = args.carry.resolve().relative_to(ROOT) if args.carry.resolve().is_relative_to(ROOT) else args.carry
        print(f'  run(command="DEEPSIM_COMMIT={manifest["commit"]} bash bench/gpu_check.sh", '
              f'carry=["{carried}"], timeout_s=300)')
        return 0
    out = args.out or Path(os.environ.get("OUT") or (tempfile.gettempdir() + "/gpu-check-smoke" if args.cpu_smoke
                                                     else ROOT / "results" / "gpu"))
    out.mkdir(parents=True, exist_ok=True)
    notes = use_carried(args.carry)
    import torch

    from repro.devices import DeviceError, pick_device

    budget = args.budget_s or (1000 if args.cpu_smoke else BUDGET_S)
    check = Check(out, budget)
    results = check.results
    results.update(provenance.record("python -m bench.gpu_check " + shlex.join(sys.argv[1:] if argv is None else argv)),
                   commit_source=commit_source(notes),
                   smoke=args.cpu_smoke, budget_s=budget, notes=notes)
    try:
        device = pick_device("cpu" if args.cpu_smoke else "cuda")
    except DeviceError as err:  # recorded, then one line and exit 2 (`cli`)
        results["error"] = str(err)
        check.write()
        raise
    if args.cpu_smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results["environment"] = environment(device)
    check.write()
    images = find_images(args.carry)
    if images is None:
        results["error"] = "no carried images"
        check.write()
        raise UsageError(f"no images in {args.carry}/assets/imagenet-subset: run `python -m bench.gpu_check --prepare` "
                         "and carry that folder")
    results["images"] = str(images)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    shared: dict[str, Any] = {}

    def peak(_allowed: float) -> dict[str, Any]:
        shared["peaks"] = matmul_peak(device, args.cpu_smoke)
        return shared["peaks"]

    # (section, cap in s, body): caps sum to the budget; a section that ends early leaves its time to the rest
    plan: list[tuple[str, float, Callable[[float], dict[str, Any]]]] = [
        ("peak", 12, peak),
        ("step", 72, lambda allowed: step_section(device, args.cpu_smoke, allowed, shared)),
        ("loader", 12, lambda allowed: loader_section(images, device, args.cpu_smoke, allowed, gpu_decode=False)),
        ("loader-gpu-decode", 12, lambda allowed: loader_section(images, device, args.cpu_smoke, allowed, gpu_decode=True)),
        ("paper-pool5", 55, lambda allowed: paper_run_section(images, device, args.cpu_smoke, allowed, work, out, shared)),
        ("resume-on-cpu", 25, lambda allowed: resume_section(shared)),
    ]
    if not args.no_compile:
        plan.append(("compile", 40, lambda allowed: compile_section(device, args.cpu_smoke, allowed, shared)))
    for name, cap, body in plan:
        if name == "compile" and check.left() < COMPILE_MIN_S:
            results["sections"][name] = {"status": "skipped", "reason": f"{check.left():.0f} s left, under the "
                                                                        f"{COMPILE_MIN_S} s a compile needs"}
            continue
        check.section(name, 300 if args.cpu_smoke else cap, body)
    check.write()
    shutil.rmtree(work, ignore_errors=True)
    print((out / "summary.md").read_text())
    failed = [k for k, v in results["sections"].items() if v.get("status") == "failed" and k not in OPTIONAL]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
