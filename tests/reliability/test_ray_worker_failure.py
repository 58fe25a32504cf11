"""Ray fault tolerance: a 2-worker Ray Train (V2) CPU run loses its rank-0 worker process to SIGKILL
mid-run; Ray restarts the worker group from the last registered checkpoint (`ray.train.get_checkpoint()`,
the run folder's checkpoints/step-N: the only copy) and the run finishes with every step, provenance status
"finished", and bounded disk use.

The run itself is started by conftest.py when the session starts (`RayWorkerKill`), so that its minutes
of start-up overlap the other tests; this test waits for it and judges the outcome."""
from __future__ import annotations

import json
import re

import pytest

import reliability_helpers
from repro import checkpoint
from reliability_helpers import RAY_EVERY as EVERY, RAY_KEEP as KEEP, RAY_STEPS as STEPS, stats_steps

pytest.importorskip("ray")


def test_killed_ray_worker_is_restarted_from_its_checkpoint(record_fault):
    background = reliability_helpers.BACKGROUND.get("ray")
    assert background is not None, "conftest.py did not start the Ray run"
    run, run_dir = background.run, background.run_dir
    status = run.wait(600)
    background.thread.join(10)
    assert background.error is None, f"{background.error}\n{run.output[-4000:]}"
    killed = background.killed

    steps = stats_steps(run_dir)
    resumes = [int(step) for step in re.findall(r"resuming after step (\d+) from", run.output)]
    resumed_at = resumes[0] if resumes else None  # Ray may relay the rank-0 line more than once
    redone = len(steps) - len(set(steps))  # steps logged twice: done before the kill and again after it
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    record_fault("SIGKILL of the rank-0 Ray Train worker process mid-run",
                 f"`{background.command}`; the worker (a `ray::RayTrainWorker` process below the CLI) killed once "
                 f"Ray had registered the checkpoint of step {killed['registered']} (step {killed['logged']} logged)",
                 f"{redone} step(s) redone: the new worker group resumed after step {resumed_at} (the newest "
                 f"complete checkpoint in the run folder); the run folder kept {len(kept)} checkpoint folders "
                 f"(keep_checkpoints={KEEP})")
    assert status == 0, run.output[-4000:]
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["status"] == "finished" and provenance["result"]["metrics"]["step"] == STEPS
    assert run.output.count("Started training worker group of size 2") == 2, "the worker group was not restarted"
    assert len(set(resumes)) == 1, f"the new worker group did not say (once) where it resumed: {resumes}"
    assert resumed_at >= killed["registered"], f"the new worker group resumed before Ray's checkpoint: {steps}"
    # Lost: the steps after the newest complete checkpoint in the run folder, registered by Ray or uploaded just
    # before the kill and registered on resume (repro.cluster.resume.newer_on_storage): at most one interval.
    assert 0 <= redone <= EVERY, steps
    assert steps[-1] == STEPS and sorted(set(steps)) == list(range(1, STEPS + 1))
    folder, state = checkpoint.load_latest(run_dir / "checkpoints")
    assert folder.name == f"step-{STEPS:08d}" and state["step"] == STEPS
    # one copy of each checkpoint, bounded: Ray registered them in the run folder and keeps keep_checkpoints
    # (a killed worker's unregistered upload is overwritten when its step is redone, or registered on resume).
    # Once, in CI on 2 busy cores, one older complete checkpoint (step-00000004) outlived Ray's retention beside
    # the newest two; not reproduced in 8 runs here, loaded or not. Tolerated: at most one per kill, complete,
    # older than the kept ones; never a torn or extra copy of a kept step.
    expected = [f"step-{s:08d}" for s in range(STEPS - EVERY * (KEEP - 1), STEPS + 1, EVERY)]
    assert kept[-KEEP:] == expected, kept
    leftover = kept[:-KEEP]
    assert len(leftover) <= 1, kept
    assert all(checkpoint.verify(run_dir / "checkpoints" / name) is None for name in leftover), kept
    assert not (run_dir / "ray").exists()
