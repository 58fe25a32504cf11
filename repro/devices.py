"""Which device a process trains on, and why CUDA cannot be used when it cannot (one line, before any
worker starts). Where a collective's tensors must live is `repro.distributed.collective_device`."""
from __future__ import annotations

import torch

from repro.config import Config
from repro.errors import DeepsimError


class DeviceError(DeepsimError, RuntimeError):
    """CUDA was asked for (device=cuda, --gpu) and cannot be used; the message says why, in one line."""


def cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process (one line), or None when a kernel runs on it."""
    if not torch.backends.cuda.is_built():
        return f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch"
    try:
        if not torch.cuda.is_available():  # also False when the driver is too old for this build (torch warns)
            torch.cuda.init()  # raises with torch's own reason, e.g. "The NVIDIA driver on your system is too old"
            return "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
        (torch.ones(1, device="cuda") + 1).item()  # a kernel of this build runs on this GPU (arch, driver)
    except Exception as err:  # noqa: BLE001 - any failure here means "unusable", reported with its reason
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        return first
    return None


def pick_device(config: Config | str) -> torch.device:
    """The device this process trains on: `config.device` (or a device string). "cuda" (what `--gpu` means)
    raises DeviceError with the reason when CUDA is unusable, so the driver can fail before any worker
    starts; "auto" takes CUDA only when it works, else the CPU. On CUDA, the process's current device (Ray
    Train sets one per worker)."""
    wanted = config if isinstance(config, str) else config.device
    if wanted == "cpu":
        return torch.device("cpu")
    problem = cuda_problem()
    if problem is None:
        return torch.device("cuda", torch.cuda.current_device())
    if wanted == "cuda":
        raise DeviceError(f"device=cuda (--gpu) but CUDA is unusable here: {problem}")
    return torch.device("cpu")


def user_device(name: str, flag: str = "--device") -> torch.device:
    """The device a command's `--device` names, checked now: "cpu", "cuda" or "cuda:N" (DeviceError for any
    other name, for a CUDA that is unusable here, or for a GPU index that does not exist), so that a command
    fails in one line before it loads anything."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{flag} {name}: not a device; choose cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"{flag} {name}: this command runs on cpu or cuda (cuda:N), not {device.type}")
    problem = cuda_problem()
    if problem is not None:
        raise DeviceError(f"{flag} {name} but CUDA is unusable here: {problem}; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible here")
    return device

