"""The one loop: balancing rule, frozen comparator, phases touching only their own nets, exact resume,
non-finite losses."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from repro import checkpoint
from repro.balance import Balance
from repro.config import make_config
from repro.loop import NonFiniteLoss, Session, Trainer, train
from repro.precision import PRECISIONS


def test_balance_state_machine():
    b = Balance()
    assert b.update(1.0, 0).events == [] and b.d_training and b.g_training
    assert "pause D" in b.update(0.05, 1).events[0] and not b.d_training
    assert b.update(0.3, 2).events == [] and not b.d_training   # hysteresis: 0.1 < ratio < 0.5 keeps D paused
    assert "resume D" in b.update(0.6, 3).events[0] and b.d_training
    events = b.update(12.0, 4).events
    assert any("pause G" in e for e in events) and not b.g_training and b.d_training
    # the original resumes G only when the ratio falls below 0.1 again (not as soon as it is ≤ 10) ...
    assert b.update(2.0, 5).events == [] and not b.g_training
    assert b.update(0.3, 6).events == [] and not b.g_training
    events = b.update(0.05, 7).events  # ... and then pauses D in the same breath (rule 1 of the script)
    assert b.g_training and not b.d_training and {e.split(": ")[1].split(" (")[0] for e in events} == {"pause D",
                                                                                                       "resume G"}
    assert len(b.history) == 5


def test_balance_tells_a_users_loop_which_nets_to_step():
    """`step_d, step_g, events = balance.update(ratio)`: the next iteration's updates, for any loop."""
    from repro import Balance as Exported

    b = Exported()
    assert Exported is Balance
    assert b.update(1.0) == (True, True, [])
    step_d, step_g, events = b.update(0.01)  # D wins by far: pause it
    assert (step_d, step_g) == (False, True) and events == ["step 1: pause D (L_discr/L_adv = 0.01 < 0.1)"]
    assert b.update(50.0)[:2] == (True, False)  # D loses badly: it resumes, G pauses
    assert b.updates == 3


def test_balance_rules_apply_in_the_scripts_order():
    """Ratio > 10 while D is paused: rule 2 resumes D (and G), rule 3 then pauses G — D trains, G does not."""
    b = Balance(d_training=False)
    b.update(20.0, 0)
    assert b.d_training and not b.g_training


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


def test_each_schedule_counts_only_its_own_updates(tmp_path, batch):
    """Caffe's solvers count their own iterations (`increment_iter` only when that net trains): a step where
    the balancing rule paused G advances D's schedule, not G's, and draws no scheduler warning."""
    trainer = Trainer(smoke(lr_milestones="1", lr_gamma=0.5), tmp_path)
    trainer.balance.g_training, trainer.balance.pause_g_above = False, float("inf")
    trainer.balance.pause_d_below = 0.0
    lr, g0 = trainer.opt_g.param_groups[0]["lr"], params(trainer.parts.model.generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = trainer.step(batch)
    assert changed(g0, trainer.parts.model.generator) == set()  # G was paused ...
    assert values["lr"] == pytest.approx(lr)                    # ... so its schedule did not move
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(lr * 0.5)  # D trained: its schedule did
    trainer.balance.g_training = True
    assert trainer.step(batch)["lr"] == pytest.approx(lr * 0.5)


def test_generator_adversarial_term_uses_D_after_its_update(tmp_path, batch):
    """(1) D on real and fake, D update; (2) D *after* the update on the fake labelled real gives L_adv."""
    trainer = Trainer(smoke(), tmp_path)
    d = trainer.parts.discriminator
    seen = []
    d.register_forward_hook(lambda m, args, out: seen.append(m.convs.Dconv1.weight.detach().clone()))
    trainer.step(batch)
    assert len(seen) == 3  # real, fake (D phase), fake for G
    assert torch.equal(seen[0], seen[1])
    assert not torch.equal(seen[1], seen[2]), "G's L_adv came from D before its update"
    assert torch.equal(seen[2], d.convs.Dconv1.weight.detach())


def test_loop_terms_equal_deepsim_loss_on_the_same_inputs(tmp_path, batch):
    """The loop's logged terms are DeePSiMLoss's on the same images, with the same D and RNG (dropout)."""
    import copy

    from repro import DeePSiMLoss

    trainer = Trainer(smoke(**PRECISIONS["fp32"]), tmp_path)  # eager fp32: DeePSiMLoss below runs without autocast
    trainer.balance.d_training = trainer.balance.g_training = False  # nothing updated: inputs stay the same
    d = copy.deepcopy(trainer.parts.discriminator)
    comparator = trainer.parts.comparator
    lambdas = trainer.lambdas
    loss = DeePSiMLoss(comparator, discriminator=d, lambda_feat=lambdas["feat"], lambda_adv=lambdas["adv"],
                       lambda_img=lambdas["img"], lambda_kl=0.0)
    torch.manual_seed(5)
    values = trainer.step(batch)
    torch.manual_seed(5)
    with torch.no_grad():
        fake = trainer.parts.model(batch)[0]
        d.train()
        discr = loss.discriminator_loss(fake, batch)
        terms = loss(fake, batch)
    assert values["discr"] == pytest.approx(discr.item(), rel=1e-6)
    for k in ("feat", "adv", "img", "total"):
        assert values[k] == pytest.approx(terms[k].item(), rel=1e-6), k
    assert trainer.loss.comparator is comparator and trainer.loss.discriminator is trainer.parts.discriminator


def test_uint8_batches_are_converted_on_the_device(tmp_path, batch):
    as_bytes = (batch * 255).round().to(torch.uint8)
    runs = []
    for name, images in (("float", as_bytes.float() / 255), ("uint8", as_bytes)):
        trainer = Trainer(smoke(), tmp_path / name)
        torch.manual_seed(3)
        runs.append(trainer.step(images))
    assert runs[0] == pytest.approx(runs[1], rel=1e-6)


def test_micro_batches_give_the_full_batch_gradient(tmp_path, batch, monkeypatch):
    """Gradient accumulation over micro-batches = one pass over the whole batch (no D: no dropout draws).
    Compared on the gradients the optimiser receives (Adam's first step would hide a wrong scale)."""
    from repro import loop

    grads = {}
    original = loop.optimizer_step

    def record(optimizer, ok):
        grads[key] = [p.grad.clone() for group in optimizer.param_groups for p in group["params"]]
        original(optimizer, ok)

    monkeypatch.setattr(loop, "optimizer_step", record)
    for key in (0, 2):
        trainer = Trainer(smoke(lambda_adv=0.0, micro_batch=key, **PRECISIONS["fp32"]), tmp_path / str(key))  # to 1e-4
        assert trainer.accumulate == (2 if key else 1)
        trainer.step(batch)
    assert len(grads[0]) == len(grads[2]) > 0
    for full, accumulated in zip(grads[0], grads[2]):
        torch.testing.assert_close(accumulated, full, rtol=1e-4, atol=1e-7)


def test_batch_plan_keeps_the_global_batch():
    from repro.loop import batch_plan

    assert batch_plan(make_config("small-pool5", {"batch_size": "64"}), 8) == (8, 1)
    assert batch_plan(make_config("small-pool5", {"batch_size": "64", "micro_batch": "4"}), 2) == (32, 8)
    with pytest.raises(ValueError, match="does not split evenly over 3 workers"):
        batch_plan(make_config("small-pool5", {"batch_size": "64"}), 3)
    with pytest.raises(ValueError, match="micro_batch=5 must divide"):
        batch_plan(make_config("small-pool5", {"batch_size": "64", "micro_batch": "5"}), 1)


def test_rconv_weights_get_the_released_prototxts_weight_decay(tmp_path):
    """generator_pool5.prototxt: Rconv6–8 weights decay_mult 1 (× the solver's 4e-4), everything else 0."""
    trainer = Trainer(smoke(), tmp_path)
    names = {id(p): n for n, p in trainer.parts.model.named_parameters()}
    plain, decayed = trainer.opt_g.param_groups
    assert plain["weight_decay"] == 0 and decayed["weight_decay"] == pytest.approx(4e-4)
    assert sorted(names[id(p)] for p in decayed["params"]) == [f"generator.head.Rconv{i}.weight" for i in (6, 7, 8)]
    assert len(Trainer(smoke(generator_map_decay=0.0), tmp_path / "none").opt_g.param_groups) == 1


def test_checkpoint_state_leaves_out_the_frozen_encoder(tmp_path, batch):
    trainer = Trainer(smoke(), tmp_path)
    trainer.step(batch)
    state = trainer.state_dict()
    assert state["model"] and not any(k.startswith("encoder.") for k in state["model"])
    assert not isinstance(state["cuda_rng"], list)  # one device's RNG at most, never every visible GPU's
    other = Trainer(smoke(), tmp_path / "other", Session(resume_state=state))
    for k, v in other.parts.model.generator.state_dict().items():
        assert torch.equal(v, trainer.parts.model.generator.state_dict()[k]), k
    older = dict(state, model={**state["model"], **{f"encoder.{k}": v for k, v in
                                                    trainer.parts.model.encoder.state_dict().items()}})
    Trainer(smoke(), tmp_path / "older", Session(resume_state=older))  # older checkpoints with the encoder load
    broken = dict(state, model={k: v for k, v in state["model"].items() if "deconv0" not in k})
    with pytest.raises(checkpoint.CheckpointError, match="missing.*deconv0"):
        Trainer(smoke(), tmp_path / "broken", Session(resume_state=broken))


def test_one_resume_rule_allows_the_resumable_fields_only(tmp_path, batch):
    """`repro.checkpoint` holds the rule: a resume may change RESUMABLE (how long, how often, where), no other
    field; every load checks the fields that fix the saved shapes, also where the rest may differ (Tune's PBT)."""
    from dataclasses import fields

    from repro.config import Config, ConfigError

    names = {f.name for f in fields(Config)}
    assert checkpoint.RESUMABLE <= names and set(checkpoint.ARCHITECTURE) <= names - checkpoint.RESUMABLE
    base = smoke()
    checkpoint.check_resumable(base, smoke(steps=9, log_every=3, nonfinite="skip"))
    with pytest.raises(ConfigError, match=r"cannot change \['lambda_adv', 'layer'\] when resuming; allowed: "):
        checkpoint.check_resumable(base, smoke(steps=9, layer="conv5", lambda_adv=1.0))
    trainer = Trainer(base, tmp_path)
    trainer.step(batch)
    state = trainer.state_dict()
    Trainer(smoke(lambda_adv=1.0), tmp_path / "exploited", Session(resume_state=state))  # other λ: loads
    with pytest.raises(checkpoint.CheckpointError, match=r"different architecture \(generator_width differ\)"):
        Trainer(smoke(generator_width=0.25), tmp_path / "wider", Session(resume_state=state))


def test_device_cuda_fails_in_one_line_when_cuda_is_unusable(monkeypatch):
    from repro import devices

    monkeypatch.setattr(devices, "cuda_problem", lambda: "The NVIDIA driver on your system is too old (found 470)")
    with pytest.raises(devices.DeviceError, match=r"^device=cuda \(--gpu\) but CUDA is unusable here: The NVIDIA"):
        devices.pick_device("cuda")
    assert devices.pick_device("auto").type == "cpu"
    if not torch.cuda.is_available():  # the real check on this machine
        with pytest.raises(devices.DeviceError):
            devices.pick_device(smoke(device="cuda"))


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
    assert (tmp_path / "full" / "grid-latest.webp").exists() and (tmp_path / "full" / "stats.jsonl").exists()


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
    assert (tmp_path / "grids" / f"step-{summary['step']:08d}.webp").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is unusable")
def test_gpu_flag_fails_on_the_driver_before_any_worker(tmp_path, capsys):
    from repro.train import main

    status = main(["--launcher", "local", "--preset", "smoke", "--gpu", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: device=cuda (--gpu) but CUDA is unusable")
    assert not (tmp_path / "run").exists()  # nothing started


def test_fp16_trains_with_a_grad_scaler_and_overflow_is_no_fault(tmp_path, batch):
    """fp16 autocast (GPUs without bf16): losses scaled by GradScaler; an overflow of the scaled gradients
    skips that update and lowers the scale instead of stopping the run (CPU fp16 kernels are slow: 2 steps)."""
    trainer = Trainer(smoke(amp="fp16", batch_size=2), tmp_path)
    assert trainer.scaler.is_enabled()
    steps = [trainer.step(batch[:2]) for _ in range(2)]
    assert all(math.isfinite(s["total"]) for s in steps)
    overflowed = [bool(s.get("grad_overflow")) for s in steps]
    # the scale halves once per step that overflowed (GradScaler's backoff), and only then
    assert trainer.scaler.get_scale() == 65536.0 * 0.5 ** sum(overflowed), (overflowed, trainer.scaler.get_scale())


def test_metrics_csv_keeps_its_columns_when_a_row_has_fewer_keys(tmp_path):
    """A step skipped under nonfinite=skip logs fewer values: its row leaves those cells empty, no column shifts."""
    import csv

    from repro.runs import RunLog

    runlog = RunLog(tmp_path, enabled=True)
    runlog.write(1, {"adv": 1.0, "feat": 2.0, "total": 3.0})
    runlog.write(2, {"skipped": 1.0, "total": 4.0})
    runlog.write(3, {"adv": 5.0, "feat": 6.0, "total": 7.0})
    runlog.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["total"] for r in rows] == ["3.0", "4.0", "7.0"]
    assert [r["feat"] for r in rows] == ["2.0", "", "6.0"] and rows[2]["adv"] == "5.0"


def test_building_and_training_setup_leave_the_callers_rng_and_threads_alone(tmp_path):
    """Loading a model (to evaluate it, to score a trial) must not reseed the caller; threads belong to entry points."""
    from repro.comparators import build_comparator
    from repro.models import build_parts

    torch.manual_seed(1234)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    parts = build_parts(make_config("smoke"), torch.device("cpu"))
    build_comparator("alexnet-random", "pool5", 64, None, seed=3)
    build_comparator("caffenet-random", "pool5", 64, None, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    again = build_parts(make_config("smoke"), torch.device("cpu"))  # still seeded: identical weights on every worker
    assert all(torch.equal(a, b) for a, b in zip(parts.model.state_dict().values(), again.model.state_dict().values()))
    Trainer(make_config("smoke", {"threads": str(threads + 1)}), tmp_path)
    assert torch.get_num_threads() == threads
