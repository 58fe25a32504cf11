"""The one loop: balancing rule, frozen comparator, phases touching only their own nets, exact resume,
non-finite losses."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from repro import checkpoint
from repro.config import make_config
from repro.loop import Balance, NonFiniteLoss, Session, Trainer, train


def test_balance_state_machine():
    b = Balance()
    assert b.update(1.0, 0) == [] and b.d_training and b.g_training
    assert "pause D" in b.update(0.05, 1)[0] and not b.d_training
    assert b.update(0.3, 2) == [] and not b.d_training          # hysteresis: 0.1 < ratio < 0.5 keeps D paused
    assert "resume D" in b.update(0.6, 3)[0] and b.d_training
    events = b.update(12.0, 4)
    assert any("pause G" in e for e in events) and not b.g_training
    assert "resume G" in b.update(2.0, 5)[0] and b.g_training
    assert len(b.history) == 4


def smoke(**overrides):
    return make_config("smoke", {k: str(v) for k, v in overrides.items()})


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.fixture()
def batch():
    torch.manual_seed(0)
    return torch.rand(4, 3, 64, 64)


def test_comparator_is_frozen_and_never_optimised(tmp_path, batch):
    trainer = Trainer(smoke(), tmp_path)
    encoder = trainer.parts.model.encoder
    assert trainer.parts.comparator is encoder and trainer.parts.shares_features
    before = params(encoder)
    optimised = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in encoder.parameters())
    trainer.parts.model.train()
    assert not encoder.training, "train() must not unfreeze the comparator"
    for _ in range(2):
        trainer.step(batch)
    assert changed(before, encoder) == set()
    assert all(p.grad is None for p in encoder.parameters())


def test_each_phase_changes_only_its_own_net(tmp_path, batch):
    trainer = Trainer(smoke(), tmp_path)
    g, d = trainer.parts.model.generator, trainer.parts.discriminator
    trainer.balance.g_training = False  # D-only iteration
    g0, d0 = params(g), params(d)
    trainer.balance.pause_g_above = float("inf")
    trainer.step(batch)
    assert changed(g0, g) == set() and changed(d0, d)
    trainer.balance.d_training, trainer.balance.g_training = False, True  # G-only iteration
    trainer.balance.resume_d_above = float("inf")
    g0, d0 = params(g), params(d)
    trainer.step(batch)
    assert changed(d0, d) == set() and changed(g0, g)


def test_schedule_counts_paused_iterations_without_warning(tmp_path, batch):
    """Caffe's solver schedules by iteration: a step where the balancing rule paused G still counts, and a
    first step with G paused is not an error worth torch's scheduler warning."""
    trainer = Trainer(smoke(lr_milestones="1", lr_gamma=0.5), tmp_path)
    trainer.balance.g_training, trainer.balance.pause_g_above = False, float("inf")
    lr, g0 = trainer.opt_g.param_groups[0]["lr"], params(trainer.parts.model.generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = trainer.step(batch)
    assert changed(g0, trainer.parts.model.generator) == set()  # G was paused ...
    assert values["lr"] == pytest.approx(lr * 0.5)                # ... and its schedule still advanced
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(lr * 0.5)


def test_resume_continues_exactly(tmp_path):
    full = train(smoke(steps=4, checkpoint_every=2), tmp_path / "full", Session(show_progress=False))
    train(smoke(steps=2, checkpoint_every=2), tmp_path / "half", Session(show_progress=False))
    _, state = checkpoint.load_latest(tmp_path / "half" / "checkpoints")
    train(smoke(steps=4, checkpoint_every=2), tmp_path / "half", Session(resume_state=state, show_progress=False))
    _, a = checkpoint.load_latest(tmp_path / "full" / "checkpoints")
    _, b = checkpoint.load_latest(tmp_path / "half" / "checkpoints")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["discriminator"]:
        assert torch.equal(a["discriminator"][key], b["discriminator"][key]), key
    assert full["step"] == 4
    assert (tmp_path / "full" / "grid-latest.png").exists() and (tmp_path / "full" / "stats.jsonl").exists()


def test_nonfinite_loss_stops_with_the_term_named(tmp_path, batch):
    trainer = Trainer(smoke(), tmp_path)
    generator = trainer.parts.model.generator
    original = generator.forward
    generator.forward = lambda y: original(y) * float("nan")
    with pytest.raises(NonFiniteLoss, match=r"non-finite .*img.* at step 0"):
        trainer.step(batch)


def test_nonfinite_skip_policy_leaves_weights_untouched(tmp_path, batch):
    trainer = Trainer(smoke(nonfinite="skip"), tmp_path)
    generator = trainer.parts.model.generator
    before = params(generator)
    original = generator.forward
    generator.forward = lambda y: original(y) * float("inf")
    values = trainer.step(batch)
    assert values["skipped"] == 1.0 and trainer.skipped == 1
    assert changed(before, generator) == set()


def test_checkpoint_corruption_falls_back(tmp_path):
    train(smoke(steps=2, checkpoint_every=1, keep_checkpoints=3), tmp_path, Session(show_progress=False))
    newest = tmp_path / "checkpoints" / "step-00000002" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    folder, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert folder.name == "step-00000001" and state["step"] == 1


def test_time_limit_stops_with_the_last_step_logged_checkpointed_and_drawn(tmp_path, assets):
    config = make_config("smoke", {"steps": "50", "log_every": "20", "image_every": "20", "checkpoint_every": "20",
                                   "time_limit_min": "1e-6"})  # out of time after the first step
    summary = train(config, tmp_path, Session(show_progress=False))
    assert summary["step"] < config.steps
    logged = [json.loads(line)["step"] for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert logged[-1] == summary["step"]
    assert (tmp_path / "checkpoints" / f"step-{summary['step']:08d}").is_dir()
    assert (tmp_path / "grids" / f"step-{summary['step']:08d}.png").exists()
