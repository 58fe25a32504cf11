"""The machine a bench ran on and how busy it was: the provenance every bench JSON carries.

Timings on a shared machine mean little without the load around them, so the load average is recorded
before and after each measurement, next to the command, commit, device, torch and thread count.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from repro import provenance as prov


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


def contended(load: list[float]) -> bool:
    """True when the 1-minute load average exceeds half the cores: CPU timings are then contended."""
    return load[0] > 0.5 * (os.cpu_count() or 1)


def provenance(device: torch.device) -> dict[str, Any]:
    """repro.provenance's record (command, commit, device, torch, created), the CPU model, threads, cores and the
    load average now (`load_average_after` is added when the measurement ends)."""
    return prov.record(prov.command("bench.throughput", sys.argv[1:]), dev=device, device_type=device.type,
                       processor=device_name(device), threads=torch.get_num_threads(), cores=os.cpu_count(),
                       load_average_before=load_average())
