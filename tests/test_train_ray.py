"""`python -m repro.train` end to end: a 2-worker Ray Train run on CPU that checkpoints, and a resumed
run (from Ray's registered checkpoint in the run folder) that reaches exactly the same parameters as an
uninterrupted one."""
from __future__ import annotations

import json

import pytest
import torch

from repro import checkpoint
from repro.train import main

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run(run_dir, steps, *extra):
    argv = ["--launcher", "ray", "--num-workers", "2", "--preset", "smoke", "--no-progress",
            "--set", f"steps={steps}", "--set", "checkpoint_every=2", "--set", "batch_size=4", *extra]
    return main(argv + (["--run-dir", str(run_dir)] if "--resume" not in extra else []))


@pytest.mark.slow
def test_two_worker_ray_run_resumes_to_identical_state(tmp_path, ray_runtime):
    assert run(tmp_path / "full", 4) == 0
    assert run(tmp_path / "half", 2) == 0
    assert run(tmp_path / "half", 4, "--resume", str(tmp_path / "half")) == 0
    _, a = checkpoint.load_latest(tmp_path / "full" / "checkpoints")
    _, b = checkpoint.load_latest(tmp_path / "half" / "checkpoints")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # one checkpoint truth: the run folder is Ray's experiment folder; its registered checkpoints are the
    # run's checkpoints/step-N (the resumed run read them there), and Ray keeps no copy of its own
    for run_dir in (tmp_path / "full", tmp_path / "half"):
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        assert snapshot["latest_checkpoint_result"]["checkpoint_dir_name"] == "checkpoints/step-00000004"
        assert not (run_dir / "ray").exists()
    provenance = json.loads((tmp_path / "full" / "provenance.json").read_text())
    assert provenance["status"] == "finished" and provenance["num_workers"] == 2
    assert {"command", "commit", "data", "weights", "device", "wall_time_s"} <= set(provenance)


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["--set", "stepz=3"]) == 2
    assert "unknown config key 'stepz'" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_dry_run_prints_config_and_resource_plan(capsys):
    assert main(["--preset", "small-pool5", "--set", "layer=conv5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    config_text, _, plan = out.partition("\n}\n")
    assert json.loads(config_text + "}")["layer"] == "conv5"
    for line in ("listing:", "cache:", "loader:", "checkpoint:"):
        assert line in plan


def test_resume_prefers_a_complete_unregistered_checkpoint_on_the_storage(tmp_path):
    """A worker lost after uploading step 6 but before Ray registered it: the restart resumes from step 6, not
    from Ray's step 4; a torn upload of step 8 is skipped; a URI's folder is left to Ray."""
    from repro import checkpoint
    from repro.cluster.resume import newer_on_storage

    run = tmp_path / "run"
    for step in (4, 6, 8):
        checkpoint.save(run / "checkpoints", step, {"step": step, "model": {}}, keep=5)
    (run / "checkpoints" / "step-00000008" / "state.pt").write_bytes(b"torn")
    registered = checkpoint.load(run / "checkpoints" / "step-00000004")
    folder, state = newer_on_storage(str(run), registered)
    assert folder.name == "step-00000006" and state["step"] == 6
    assert newer_on_storage(str(run), checkpoint.load(run / "checkpoints" / "step-00000006")) is None
    assert newer_on_storage(str(run), None)[1]["step"] == 6  # nothing registered yet
    assert newer_on_storage("s3://bucket/run", registered) is None


@pytest.mark.slow
def test_a_default_ray_run_shows_one_live_bar_and_none_of_rays_noise(tmp_path):
    """Under Ray every tqdm update used to become a log line of its own (1,305 lines for 1,282 steps), Ray
    Train printed its INFO lines (resources, every checkpoint and report) and an alarming PreemptionWatcher
    error on every run. Now: the run folder first, one bar drawn on the driver, the closing line."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "repro.train", "--preset", "smoke", "--run-dir", str(run),
                           "--set", "steps=8", "--set", "log_every=1", "--set", "checkpoint_every=4",
                           "--set", "image_every=8", "--set", "threads=1"],
                          capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"run folder {run}"
    assert done.stdout.strip().splitlines()[-1].startswith(f"finished 8 steps: run folder {run}")
    # (left: one "Reporting training result N" line per checkpoint, which Ray Train logs from a thread of its own
    # past its LoggingConfig)
    noise = [n for n in ("PreemptionWatcher", "Requesting resources", "Checkpoint successfully",
                         "Started a local Ray instance", "Setting up process group") if n in output]
    assert not noise, (noise, output[-4000:])
    # the bar is drawn by the driver from the worker's state (Ray's tqdm integration: "3.00/8.00"), not printed
    # by the worker's own tqdm ("| 3/8 [", which Ray forwarded as one log line per update)
    assert "8.00/8.00" in output
    assert not re.search(r"\| \d/8 \[", output), output[-3000:]
