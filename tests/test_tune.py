"""`python -m tune.search`: the λ search wraps the one loop in Ray Tune.

The loop's checkpoint hook scores the model in memory exactly as a model rebuilt from the checkpoint
scores, without changing the training. A 2-trial search on CPU leaves results, checkpoints and the exported
table, and names as best the trial with the smallest objective; a search killed (SIGKILL) in the middle of its second trial and
continued with --resume finishes without starting the completed trial again, the interrupted one
continuing from its last reported checkpoint.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import torch

from repro.checkpoint import load_model_state
from repro.config import make_config
from repro.loop import Session, train
from repro.models import build_parts
from tune.options import SearchError, SearchOptions, build_config
from tune.scoring import CheckpointScorer
from tune.search import main
from tune.spaces import SPACES, SpaceError, space_for
from tune.target import Target, parse_target
from tune.tuner import make_scheduler

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# Targets and spaces (no Ray)
# ---------------------------------------------------------------------------------------------------
def test_paper_targets_are_table2_fractions():
    assert (parse_target("paper:fc6", "pool5").image, parse_target("paper:fc6", "pool5").feature) == (0.55, 0.48)
    assert (parse_target("paper:conv5", "fc6").image, parse_target("paper", "pool5").feature) == (0.43, 0.37)
    assert (parse_target("paper", "fc8").image, parse_target("paper", "fc8").feature) == (0.63, 0.29)
    explicit = parse_target("image=0.5,feature=0.2", "pool5")
    assert explicit.distance(0.5 + 0.3, 0.2 + 0.4) == pytest.approx(0.5)  # a 3-4-5 triangle
    assert Target(0.5, None, "image only").distance(0.7, 123.0) == pytest.approx(0.2)
    for bad in ("paper:conv3", "image=55", "imag=0.5", "image=x"):
        with pytest.raises(SearchError):
            parse_target(bad, "pool5")


def test_space_keeps_ablated_terms_off_and_refuses_single_term_presets():
    full = space_for(make_config("smoke"))
    assert set(full) == {"lambda_feat", "lambda_adv", "lambda_img"}
    for name, r in full.items():  # the paper's value in the middle, one decade either side
        assert r.low < getattr(make_config("smoke"), name) < r.high
        assert r.high / r.low == pytest.approx(100)
    assert set(space_for(make_config("ablation-no-adv"))) == {"lambda_feat", "lambda_img"}
    assert set(SPACES["vae"]) == {"lambda_feat", "lambda_adv", "lambda_img", "lambda_kl"}
    narrow = space_for(make_config("smoke", {"lambda_adv": 50.0}), decades=0.5)
    assert narrow["lambda_adv"].centre == pytest.approx(50.0)
    with pytest.raises(SpaceError, match="only lambda_img"):
        space_for(make_config("small-pool5-image"))


def test_cli_rejects_bad_arguments(capsys):
    assert main(["--preset", "nope", "--dry-run"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--target", "image=55", "--dry-run"]) == 2
    assert "fractions" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--trials", "0", "--dry-run"]) == 2
    assert main(["--preset", "smoke", "--target", "paper:fc7", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["target"]["image"] == 0.61 and printed["config"]["threads"] == 1


def test_pbt_is_seeded_by_the_search_seed():
    config = build_config(SearchOptions("smoke", {}, "paper"))
    draws = []
    for seed in (3, 3, 4):
        make_scheduler("pbt", config, space_for(config), seed)
        draws.append(random.random())
    assert draws[0] == draws[1] != draws[2]


def test_checkpoint_hook_scores_the_trained_model_in_memory(tmp_path, one_thread):
    """The scores reported at a checkpoint are those of the model rebuilt from that checkpoint, and
    scoring at every checkpoint leaves the training exactly as it is without."""
    config = make_config("smoke", {"steps": "2", "checkpoint_every": "1"})
    reports = []
    scorer = CheckpointScorer(config, 4, image_metrics=False)
    session = Session(report=lambda metrics, folder: reports.append((metrics, folder)), show_progress=False,
                      checkpoint_hook=scorer)
    train(config, tmp_path / "scored", session)
    train(config, tmp_path / "plain", Session(show_progress=False))
    assert [m["step"] for m, _ in reports] == [1, 2] and all("image_error_pct" in m for m, _ in reports)
    metrics, folder = reports[-1]
    scored = torch.load(folder / "state.pt", weights_only=True)["model"]
    plain = torch.load(sorted((tmp_path / "plain" / "checkpoints").iterdir())[-1] / "state.pt",
                       weights_only=True)["model"]
    assert all(torch.equal(scored[k], plain[k]) for k in plain), "scoring changed the training"
    rebuilt = build_parts(config, torch.device("cpu")).model
    load_model_state(rebuilt, scored)
    again = CheckpointScorer(config, 4, image_metrics=False)(rebuilt)
    for key in ("image_error_pct", "feature_error_pct"):
        assert metrics[key] == pytest.approx(again[key], rel=1e-5), key


# ---------------------------------------------------------------------------------------------------
# Real searches
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the in-process searches (`main` leaves a runtime it did not start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def search_args(storage: Path, name: str, steps: int, every: int, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--set", f"steps={steps}", "--set", f"checkpoint_every={every}", "--trials", "2",
            "--eval-images", "4", "--storage", str(storage), "--name", name, *extra]


def tune_results(trial_dir: Path) -> list[dict]:
    """Tune's own record of a trial (result.json, one JSON line per report), read without our export."""
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def starts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_trial_search_exports_best_first(tmp_path, ray_runtime):
    export = tmp_path / "export"
    assert main(search_args(tmp_path, "two", 3, 1, "--scheduler", "asha", "--export", str(export))) == 0
    experiment = tmp_path / "two"

    rows = list(csv.DictReader(open(export / "results.csv")))
    assert len(rows) == 2 and [int(r["rank"]) for r in rows] == [1, 2]
    for name in ("results.md", "best.json", "search.json"):
        assert (export / name).stat().st_size > 0, name
    assert rows[0]["lambda_adv"] != rows[1]["lambda_adv"]  # two different samples of the space

    # Tune's own per-trial records: every report carries the objective and a checkpoint.
    trial_dirs = [d for d in experiment.iterdir() if (d / "result.json").exists()]
    assert len(trial_dirs) == 2
    final = {}
    target = Target(**json.loads((experiment / "search.json").read_text())["target"])
    for trial_dir in trial_dirs:
        reports = tune_results(trial_dir)
        last = reports[-1]
        assert [r["step"] for r in reports] == list(range(1, len(reports) + 1))  # one report per checkpoint
        assert last["objective"] == pytest.approx(
            target.distance(last["image_error_pct"] / 100, last["feature_error_pct"] / 100))
        assert {"psnr", "ssim", "lpips"} <= set(last)
        assert list(trial_dir.glob("events.out.tfevents.*")), "no TensorBoard log of the trial (Tune's TBX logger)"
        kept = sorted(trial_dir.glob("checkpoint_*"))
        assert 1 <= len(kept) <= 2, f"Tune keeps 1–2 checkpoints per trial, not {kept}"
        run_dir = experiment / "runs" / last["trial_id"]
        assert not (run_dir / "checkpoints").exists(), "a second copy of the checkpoints beside Tune's"
        assert (run_dir / "stats.jsonl").exists() and len(starts(run_dir)) == 1
        if last["step"] == 3:  # ran the whole schedule (ASHA may stop the worse one at a rung)
            final[last["trial_id"]] = last["objective"]

    assert final, "ASHA lets the first trial at every rung continue, so one trial must finish"
    best = json.loads((export / "best.json").read_text())
    assert best["best"]["trial"] == rows[0]["trial"] == min(final, key=final.get)
    if rows[1]["status"] == "finished":
        assert float(rows[0]["objective"]) <= float(rows[1]["objective"])
    else:
        assert rows[1]["status"] == "stopped early" and int(rows[1]["step"]) < 3
    assert best["preset"]["resolution"] == 64 and best["preset"]["lambda_feat"] == pytest.approx(
        float(rows[0]["lambda_feat"]), rel=1e-2)


def trial_states(experiment: Path) -> list[tuple[str, bool]]:
    """(status, has a checkpoint) of every trial in the experiment state Tune has saved so far (a running
    trial is saved as PENDING: that is what it will be when the experiment is restored)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(experiment))
    except Exception:  # not written yet, or being replaced right now
        return []
    return [(trial.status, trial.checkpoint is not None) for trial in analysis.trials]


@pytest.mark.slow
def test_killed_search_resumes_without_repeating_finished_trials(tmp_path, ray_runtime):
    steps = 12
    experiment = tmp_path / "killed"
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tune.search", *search_args(tmp_path, "killed", steps, 2, "--scheduler", "fifo",
                                                             "--concurrent", "1", "--no-image-metrics")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 150
    try:
        # Kill once Tune has recorded one finished trial and a checkpoint of the running one.
        while time.time() < deadline and process.poll() is None:
            states = trial_states(experiment)
            if ("TERMINATED", True) in states and ("PENDING", True) in states:
                break
            time.sleep(0.3)
        assert process.poll() is None, f"the search ended before it could be interrupted: {(tmp_path / 'first.log').read_text()[-3000:]}"
        assert time.time() < deadline, "the search never reached its second trial"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the search and everything it started
        process.wait()
    run_dirs = sorted((experiment / "runs").iterdir())
    assert len(run_dirs) == 2
    reached = {d: json.loads((d / "provenance.json").read_text())["steps"] for d in run_dirs}
    interrupted = [d for d in run_dirs if reached[d] < steps]
    assert len(interrupted) == 1, f"exactly one trial should have been killed mid-run: {reached}"

    assert main(["--resume", str(experiment)]) == 0

    for run_dir in run_dirs:
        lines = starts(run_dir)
        if run_dir in interrupted:  # started again, from the checkpoint Tune had when it was killed
            assert len(lines) == 2 and lines[1]["resumed_from_step"] is not None
            assert 1 <= lines[1]["resumed_from_step"] < steps
        else:  # finished before the kill: never started again
            assert len(lines) == 1 and lines[0]["resumed_from_step"] is None
        assert json.loads((run_dir / "provenance.json").read_text())["steps"] == steps
    rows = list(csv.DictReader(open(experiment / "results.csv")))
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert sorted(int(r["starts"]) for r in rows) == [1, 2]
    assert min(float(r["objective"]) for r in rows) == float(rows[0]["objective"])
    record = json.loads((experiment / "search.json").read_text())
    assert len(record["sessions"]) == 2 and "--resume" in record["sessions"][1]["command"]
