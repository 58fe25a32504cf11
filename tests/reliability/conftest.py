"""Fixtures of the fault-injection tests, and the fault table that
`RELIABILITY_REPORT=results/reliability.md pytest tests/reliability` writes from the run itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import reliability_helpers
from reliability_helpers import REPO, Cli, RayWorkerKill

_FAULTS: dict[str, list[tuple[str, str, str]]] = {}  # nodeid → [(fault, how, lost)], recorded by the tests
_OUTCOMES: dict[str, str] = {}
_STARTED = time.time()


@pytest.fixture()
def record_fault(request):
    """record_fault(fault, how, lost): one row of the table in results/reliability.md."""

    def record(fault: str, how: str, lost: str) -> None:
        _FAULTS.setdefault(request.node.nodeid, []).append((fault, how, lost))

    return record


@pytest.fixture()
def cli(tmp_path):
    """cli(argv, name) → a started `Cli` logging to tmp_path/name.log; all are killed after the test."""
    started: list[Cli] = []

    def start(argv: list[str], name: str) -> Cli:
        run = Cli(argv, tmp_path / f"{name}.log")
        started.append(run)
        return run

    yield start
    for run in started:
        run.cleanup()


# The Ray run takes minutes of mostly start-up latency: when its test is selected it starts with the
# session and runs alongside the other tests (its test is collected last and waits for it).
RAY_TEST = "test_ray_worker_failure.py"


def pytest_collection_finish(session):
    if any(item.path.name == RAY_TEST for item in session.items):
        import importlib.util
        import tempfile

        if importlib.util.find_spec("ray") is not None:
            base = Path(tempfile.mkdtemp(prefix="reliability-ray-"))
            reliability_helpers.BACKGROUND["ray"] = RayWorkerKill(base)


def pytest_sessionfinish(session):
    background = reliability_helpers.BACKGROUND.pop("ray", None)
    if background is not None:
        import shutil

        background.run.cleanup()
        shutil.rmtree(background.run_dir.parent, ignore_errors=True)


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome == "failed":
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        _OUTCOMES[report.nodeid] = outcome


def pytest_terminal_summary(terminalreporter):
    target = os.environ.get("RELIABILITY_REPORT")
    if not target:
        return
    counts = {key: len(terminalreporter.stats.get(key, [])) for key in
              ("failed", "passed", "skipped", "xfailed", "xpassed", "error")}
    summary = ", ".join(f"{n} {key}" for key, n in counts.items() if n) + f" in {time.time() - _STARTED:.1f}s"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    lines = [
        "# Reliability: faults injected and what was lost",
        "",
        "Written by `RELIABILITY_REPORT=results/reliability.md .venv/bin/python -m pytest tests/reliability` "
        "from that run: each row is recorded by the test that injected the fault, with the test's outcome.",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: `{git('rev-parse', 'HEAD')}`"
        + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""),
        f"- machine: {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {sys.version.split()[0]}",
        f"- pytest: **{summary}**",
        "",
        "| fault | how | result | lost |",
        "|---|---|---|---|",
    ]
    for nodeid, rows in _FAULTS.items():
        test = nodeid.split("tests/reliability/", 1)[-1]
        for fault, how, lost in rows:
            lines.append(f"| {fault} | {how} (`{test}`) | {_OUTCOMES.get(nodeid, 'not run')} | {lost} |")
    path = Path(target) if Path(target).is_absolute() else REPO / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    terminalreporter.write_line(f"reliability table written to {path}")
