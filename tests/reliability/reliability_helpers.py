"""Shared by the fault-injection tests: CLI runs in their own process group, process-tree lookups, polling."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def train_argv(run_dir: Path, *settings: str, launcher: str = "local") -> list[str]:
    """`python -m repro.train` on the smoke preset, deterministic on CPU (one thread), no periodic grids."""
    argv = [sys.executable, "-m", "repro.train", "--launcher", launcher, "--preset", "smoke", "--no-progress",
            "--set", "threads=1", "--set", "image_every=1000", "--run-dir", str(run_dir)]
    for setting in settings:
        argv += ["--set", setting]
    return argv


def resume_argv(run_dir: Path, launcher: str = "local") -> list[str]:
    return [sys.executable, "-m", "repro.train", "--launcher", launcher, "--no-progress", "--resume", str(run_dir)]


class Cli:
    """A CLI run in its own session (process group) with its output in a file. `cleanup()` SIGKILLs the
    run and every process ever seen below it (Ray's raylet and workers), by pid."""

    def __init__(self, argv: list[str], log: Path):
        self.argv, self.log_path = argv, log
        self._log = open(log, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.seen: set[int] = set()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(self.argv[1:4])}… still running after {timeout:.0f} s:\n{self.output[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the CLI process itself: the whole run crashes at this instant."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def descendants(self) -> list[int]:
        found = descendants(self.proc.pid)
        self.seen.update(found)
        return found

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.descendants()
        for pid in [self.proc.pid, *sorted(self.seen)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren …), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(condition, timeout: float, what: str, run: Cli | None = None, poll: float = 0.02):
    """Poll `condition()` until it returns something truthy; fail naming `what` after `timeout` seconds,
    or as soon as `run` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"the run exited (status {run.proc.returncode}) before {what}:\n{run.output[-3000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{run.output[-3000:]}" if run else ""))


def stats_steps(run_dir: Path) -> list[int]:
    """Steps logged in stats.jsonl, in file order (a line cut short by a kill is skipped)."""
    steps = []
    path = run_dir / "stats.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                steps.append(json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError):
                continue
    return steps


def intact_steps(checkpoints: Path) -> list[int]:
    """Steps of the complete, checksum-verified checkpoints under `checkpoints`, oldest first."""
    from repro import checkpoint

    return sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*")
                  if p.is_dir() and checkpoint.verify(p) is None)


# ---- the Ray worker-kill run, started when the session starts so that it overlaps the other tests ----------
RAY_STEPS, RAY_EVERY, RAY_KEEP = 12, 2, 2
BACKGROUND: dict[str, "RayWorkerKill"] = {}  # started by conftest.pytest_collection_finish


def registered_step(ray_storage: Path) -> int | None:
    """Step of the newest checkpoint Ray's controller has registered (its snapshot file), else None."""
    try:
        snapshot = json.loads((ray_storage / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["step"])
    except (OSError, ValueError, KeyError, TypeError):  # not written yet, written half, or no checkpoint yet
        return None


class RayWorkerKill:
    """`python -m repro.train --launcher ray --num-workers 2 --max-failures 2` in the background; a thread
    waits until Ray's controller has registered a checkpoint, then SIGKILLs the rank-0 worker process
    (found below the CLI as `ray::RayTrainWorker`, rank from the controller's log)."""

    def __init__(self, base: Path):
        import threading

        self.run_dir = base / "ray-run"
        self.ray_storage = self.run_dir  # the run folder is Ray's experiment folder (its checkpoint snapshot)
        argv = train_argv(self.run_dir, f"steps={RAY_STEPS}", f"checkpoint_every={RAY_EVERY}",
                          f"keep_checkpoints={RAY_KEEP}", launcher="ray") + ["--num-workers", "2", "--max-failures", "2",
                                                                              "--verbose"]  # Ray's rank ↔ pid lines
        self.command = "python -m repro.train " + " ".join(argv[3:])
        self.run = Cli(argv, base / "ray.log")
        self.killed: dict | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._kill_rank0, daemon=True)
        self.thread.start()

    def _kill_rank0(self) -> None:
        try:
            registered = wait_for(lambda: registered_step(self.ray_storage), 500, "a checkpoint registered by Ray",
                                  self.run, poll=0.05)
            ranks = {int(rank): int(pid) for pid, rank in re.findall(r"pid=(\d+)\) world_rank=(\d+)", self.run.output)}
            workers = [pid for pid in self.run.descendants() if "RayTrainWorker" in command_line(pid)]
            if ranks.get(0) not in workers:
                raise AssertionError(f"rank 0 ({ranks}) is not among the RayTrainWorker processes {workers}")
            logged = max(stats_steps(self.run_dir))
            os.kill(ranks[0], signal.SIGKILL)
            self.killed = {"pid": ranks[0], "registered": registered, "logged": logged}
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = f"{type(err).__name__}: {err}"
