"""Peak memory of one step of a variant, measured in a fresh process so that nothing else is resident.

    python -m bench.memory '{"preset": "small-pool5", "variant": "bf16", "overrides": {...}}'   # one JSON line

The probe runs one warm-up step, records the resting memory, then the peak over one more step. CPU: RSS
(VmHWM after resetting it through /proc/self/clear_refs; `resource.ru_maxrss` where that is unavailable;
psutil is not installed). CUDA: `torch.cuda.max_memory_allocated`. `step_mib` = peak − resting, the step's
working memory.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from bench.variants import make_trainer

ROOT = Path(__file__).resolve().parents[1]


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


def probe(preset: str, variant: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """In this process: one warm-up step, then resting memory and the peak over one step (MiB)."""
    if overrides.get("threads", 0) > 0:
        torch.set_num_threads(overrides["threads"])  # an entry point sets threads; the Trainer does not
    trainer = make_trainer(preset, variant, overrides)
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


def measure_memory(preset: str, variant: str, overrides: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`probe` in a fresh subprocess; an error (one line) instead when it fails or runs out of time."""
    payload = json.dumps({"preset": preset, "variant": variant, "overrides": overrides})
    try:
        done = subprocess.run([sys.executable, "-m", "bench.memory", payload], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe exceeded {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(probe(spec["preset"], spec["variant"], spec["overrides"])))
