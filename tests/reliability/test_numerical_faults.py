"""Numerical faults: NaN/inf in a loss term or a gradient stops the run (default) with a message naming the
term and the last good checkpoint, which stays intact; `nonfinite=skip` skips that update and finishes.
Plus a natural blow-up (an absurd learning rate) through the real CLI, and the stuck balancing rule."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

import repro.losses
import repro.loop
from repro import checkpoint
from repro.config import make_config
from repro.loop import Trainer
from repro.train import main
from reliability_helpers import intact_steps, train_argv


def run_main(run_dir, *settings):
    argv = ["--launcher", "local", "--preset", "smoke", "--no-progress", "--run-dir", str(run_dir),
            "--set", "threads=1", "--set", "image_every=1000", "--set", "checkpoint_every=1"]
    for setting in settings:
        argv += ["--set", setting]
    return main(argv)


def poison_term(monkeypatch, term: str, at_call: int, value: float):
    """From the `at_call`-th generator step on (0-based) for one step, loss term `term` becomes `value`."""
    original, calls = repro.losses.generator_terms, {"n": 0}

    def poisoned(*args, **kwargs):
        terms = original(*args, **kwargs)
        if calls["n"] == at_call:
            terms[term] = terms[term] * value
        calls["n"] += 1
        return terms

    monkeypatch.setattr(repro.losses, "generator_terms", poisoned)


def assert_finite_checkpoint(folder):
    assert checkpoint.verify(folder) is None, folder
    state = checkpoint.load(folder)
    for key, tensor in state["model"].items():
        assert torch.isfinite(tensor).all(), key


@pytest.mark.parametrize("term, value", [("feat", math.nan), ("adv", math.inf)])
def test_nonfinite_loss_term_stops_naming_it(tmp_path, capsys, monkeypatch, term, value, record_fault):
    poison_term(monkeypatch, term, at_call=2, value=value)
    status = run_main(tmp_path, "steps=4")
    err = capsys.readouterr().err
    last_good = tmp_path / "checkpoints" / "step-00000002"
    record_fault(f"{value} injected into loss term `{term}` at step 2 (nonfinite=stop)",
                 "`repro.train.main([... --set steps=4 --set checkpoint_every=1])`, `generator_terms` wrapped",
                 f"the run stops (exit {status}); nothing saved after step 2, whose checkpoint is intact")
    assert status == 1
    assert f"error: non-finite {term} at step 2 (last good checkpoint: {last_good})" in err
    assert "Traceback" not in err
    assert intact_steps(tmp_path / "checkpoints") == [1, 2]
    assert_finite_checkpoint(last_good)
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["status"] == "stopped: non-finite loss" and f"non-finite {term}" in provenance["result"]["error"]


def test_nonfinite_generator_gradient_stops_naming_it(tmp_path, capsys, monkeypatch, record_fault):
    """The losses stay finite; one gradient of the generator becomes inf (a hook on its first parameter)."""
    original, calls = repro.loop.trainable, {"n": 0}

    def trainable_with_hook(module):
        params = original(module)
        if module.__class__.__name__ == "Inverter":
            def hook(grad):
                calls["n"] += 1
                return grad * math.inf if calls["n"] == 2 else grad
            params[0].register_hook(hook)
        return params

    monkeypatch.setattr(repro.loop, "trainable", trainable_with_hook)
    status = run_main(tmp_path, "steps=3")
    err = capsys.readouterr().err
    record_fault("inf injected into a generator gradient at step 1", "a tensor hook on G's first parameter",
                 f"the run stops (exit {status}); the step-1 checkpoint is kept")
    assert status == 1
    assert f"error: non-finite generator gradients at step 1 (last good checkpoint: {tmp_path / 'checkpoints' / 'step-00000001'})" in err
    assert intact_steps(tmp_path / "checkpoints") == [1]


def test_skip_policy_skips_one_update_and_finishes(tmp_path, capsys, monkeypatch, caplog, record_fault):
    poison_term(monkeypatch, "adv", at_call=1, value=math.nan)
    with caplog.at_level(logging.WARNING, logger="repro.loop"):
        status = run_main(tmp_path, "steps=3", "nonfinite=skip")
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    record_fault("NaN injected into loss term `adv` at step 1 (nonfinite=skip)", "as above, `--set nonfinite=skip`",
                 "that one update (the step still counts); the run finishes")
    assert status == 0, capsys.readouterr().err
    assert "non-finite adv at step 1" in caplog.text and "skipping this update" in caplog.text
    assert [row.get("skipped", 0.0) for row in rows] == [0.0, 1.0, 0.0]
    folder, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert state["step"] == 3 and state["skipped"] == 1
    assert_finite_checkpoint(folder)
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["status"] == "finished" and provenance["result"]["skipped"] == 1


@pytest.mark.slow
def test_learning_rate_blow_up_through_the_cli(tmp_path, cli, record_fault):
    """No injection: lr=1e30 makes Adam's first update overflow the weights; the real CLI process exits 1
    with one line naming the non-finite terms and the last good checkpoint. D is updated first and G's L_adv
    comes from the updated D (the original's order), so the overflow shows in step 0's adversarial term and
    G's update of that step is skipped: nothing is saved."""
    run = cli(train_argv(tmp_path / "run", "steps=4", "checkpoint_every=1", "lr=1e30"), "blowup")
    status = run.wait(300)
    out = run.output
    record_fault("weights overflow after one update (lr=1e30), no injection",
                 "`python -m repro.train --launcher local --preset smoke --set lr=1e30` in a subprocess",
                 f"exit {status}; stops at step 0 (D's overflowed update shows in L_adv at once), no checkpoint")
    assert status == 1, out[-3000:]
    error = next(line for line in out.splitlines() if line.startswith("error: non-finite"))
    assert error.endswith("at step 0 (no checkpoint yet)") and " adv" in error
    assert "Traceback" not in out
    assert intact_steps(tmp_path / "run" / "checkpoints") == []


def test_discriminator_stuck_paused_is_reported(tmp_path, caplog, record_fault):
    """D paused for many consecutive steps (the ratio never recovers): the loop should warn once the pause
    has lasted `Balance.stuck_after` steps and log the length of the pause with the other stats."""
    config = make_config("smoke", {"pause_d_below": "1e9", "resume_d_above": "1e10", "threads": "1"})
    trainer = Trainer(config, tmp_path)
    trainer.balance.stuck_after = 5
    torch.manual_seed(0)
    batch = torch.rand(4, 3, 64, 64)
    values = {}
    with caplog.at_level(logging.INFO, logger="repro.loop"):
        for _ in range(6):
            values = trainer.step(batch)
            trainer.step_count += 1
    record_fault("discriminator stuck paused (pause rule never releases it)",
                 "`Trainer` with pause_d_below=1e9, 6 steps, `balance.stuck_after = 5`",
                 "nothing: a warning once the pause has lasted `stuck_after` steps, its length in the stats")
    assert values["d_training"] == 0.0  # D really has been paused throughout
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("D paused for 5 consecutive steps" in w for w in warnings), caplog.text
    assert values.get("d_paused_steps") == 6.0
