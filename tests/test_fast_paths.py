"""Speed options of the loop (channels_last, bf16 autocast, torch.compile, fused Adam) give the
loss values of the plain eager fp32 path, within a stated tolerance, for a few steps at smoke size on real
images; and the step computes the comparator once per image batch (C(x) is reused, not recomputed). The default
path is the device's fastest of them (`repro.precision`), and `--precision fp32` is eager fp32 exactly.

Tolerances (relative, per loss term, every step), from what was observed at smoke size on CPU with a 4×
or larger margin:
- channels_last: 1e-5 (observed ≤ 2e-7: only the convolutions' summation order changes);
- bf16 autocast, alone or with channels_last (`--precision bf16`, `channels_last+bf16`): 1e-2 (observed
  ≤ 2.3e-3 on L_feat, ≤ 1.2e-3 on L_discr: 8-bit mantissas in the forward passes; the losses themselves are
  computed in fp32);
- torch.compile (inductor, `fallback_random` so dropout draws eager's masks): 1e-4.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from repro import precision
from repro.assets import asset_folder
from repro.config import from_dict, make_config
from repro.data import list_images, load_images
from repro.loop import Trainer
from repro.optim import make_adam
from repro.precision import PRECISIONS

TERMS = ("feat", "adv", "img", "discr", "total")
STEPS = 2
COMPILE_BUDGET_S = 60  # inductor's first compile on 2 CPU cores can take minutes with a cold cache
ROOT = Path(__file__).resolve().parents[1]


def smoke(**overrides):
    return make_config("smoke", {k: str(v) for k, v in overrides.items()})


@pytest.fixture(scope="module")
def images():
    files = list_images(asset_folder("caltech101", verify=False))
    return load_images(files[:8:2], 64)  # (4, 3, 64, 64), four different categories


def loss_values(images: torch.Tensor, tmp_path: Path, **overrides) -> list[dict[str, float]]:
    trainer = Trainer(smoke(**overrides), tmp_path)
    torch.manual_seed(1)  # the same dropout masks in D for every path
    return [trainer.step(images) for _ in range(STEPS)]


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """Eager fp32 NCHW, pinned: the default path depends on the device."""
    return loss_values(images, tmp_path_factory.mktemp("reference"), **PRECISIONS["fp32"])


def worst_relative_error(reference: list[dict[str, float]], fast: list[dict[str, float]]) -> dict[str, float]:
    return {k: max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(reference, fast)) for k in TERMS}


def convolutions(trainer: Trainer) -> list[torch.nn.Module]:
    return [m for part in (trainer.parts.model, trainer.parts.discriminator) for m in part.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_channels_last_matches_reference(images, reference, tmp_path):
    trainer = Trainer(smoke(amp="off", channels_last=True), tmp_path)
    convs = convolutions(trainer)
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    errors = worst_relative_error(reference, loss_values(images, tmp_path, amp="off", channels_last=True))
    assert max(errors.values()) < 1e-5, errors


def test_bf16_autocast_matches_reference(images, reference, tmp_path):
    fast = loss_values(images, tmp_path, **PRECISIONS["bf16"])
    errors = worst_relative_error(reference, fast)
    assert max(errors.values()) < 1e-2, errors
    assert errors["feat"] > 0, "bf16 autocast changed nothing: is it applied to the comparator?"
    assert all(isinstance(v, float) and math.isfinite(v) for step in fast for v in step.values())


def test_channels_last_with_bf16_matches_reference(images, reference, tmp_path):
    """The two together (`--precision channels_last+bf16`) within bf16's tolerance."""
    errors = worst_relative_error(reference, loss_values(images, tmp_path, **PRECISIONS["channels_last+bf16"]))
    assert max(errors.values()) < 1e-2, errors
    assert errors["feat"] > 0, "nothing changed: was bf16 applied?"


def cpu_with_bf16(monkeypatch, bf16: bool) -> None:
    """Make this CPU one with (AVX-512 BF16) or without bf16 instructions, as `repro.precision` asks torch."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize("bf16, expected", [(True, "channels_last+bf16"), (False, "fp32")])
def test_the_default_on_a_cpu_is_channels_last_bf16_where_it_has_bf16_instructions(monkeypatch, tmp_path, bf16,
                                                                                    expected):
    cpu_with_bf16(monkeypatch, bf16)
    assert precision.default_precision("cpu") == expected
    trainer = Trainer(smoke(device="cpu"), tmp_path)  # amp and channels_last left at auto
    assert {"amp": trainer.config.amp, "channels_last": trainer.config.channels_last} == PRECISIONS[expected]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) == (expected != "fp32")
               for c in convolutions(trainer))
    assert json.loads(trainer.state_dict()["config"])["amp"] == PRECISIONS[expected]["amp"]  # checkpoints record it


@pytest.mark.parametrize("available, bf16, expected", [(True, True, "channels_last+bf16"), (True, False, "fp32"),
                                                       (False, False, "channels_last+bf16")])
def test_the_default_on_a_gpu_is_channels_last_bf16_where_it_has_bf16(monkeypatch, available, bf16, expected):
    """A GPU with bf16 in hardware (Ampere and later) takes the fast path; a driver that sees no GPU (a cluster's,
    --gpu --address …) decides for its workers' GPUs as if they had it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert precision.default_precision(torch.device("cuda", 0)) == expected
    assert precision.name_of(precision.resolve(smoke(), "cuda")) == expected


def test_set_fields_stay_and_only_fields_left_at_auto_follow_the_device(monkeypatch):
    cpu_with_bf16(monkeypatch, True)
    star = make_config("conv5star-warm")  # the CONV5* presets set bf16 + channels_last themselves
    assert (star.amp, star.channels_last) == ("bf16", True) and precision.resolve(star, "cpu") == star
    cpu_with_bf16(monkeypatch, False)
    assert precision.resolve(star, "cpu") == star
    cpu_with_bf16(monkeypatch, True)
    mixed = precision.resolve(smoke(amp="off"), "cpu")
    assert (mixed.amp, mixed.channels_last) == ("off", True) and precision.name_of(mixed) == "custom"
    assert precision.name_of(precision.resolve(smoke(channels_last="auto", amp="fp16"), "cpu")) == "custom"
    # an older run's saved config: its own fields stay; one that predates them ran eager fp32
    saved = smoke().to_dict()
    assert from_dict(dict(saved, amp="bf16", channels_last=False)).amp == "bf16"
    old = from_dict({k: v for k, v in saved.items() if k not in ("amp", "channels_last")})
    assert precision.name_of(precision.resolve(old, "cpu")) == "fp32"


def test_precision_fp32_is_eager_fp32_exactly(images, reference, tmp_path, monkeypatch):
    """`--precision fp32` where the device's default is the fast path: no autocast, NCHW, the reference's values."""
    from repro.train import parse_args, resolve

    cpu_with_bf16(monkeypatch, True)
    config = resolve(parse_args(["--preset", "smoke", "--precision", "fp32"]))[0]
    trainer = Trainer(config, tmp_path)
    assert (trainer.config.amp, trainer.config.channels_last) == ("off", False)
    assert not isinstance(trainer.autocast(), torch.autocast)
    assert not any(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions(trainer))
    torch.manual_seed(1)
    assert [trainer.step(images) for _ in range(STEPS)] == reference


def test_a_run_resumes_on_the_path_it_started_on_whatever_the_default(tmp_path, monkeypatch, capsys):
    """An fp32 run folder (as every run before the per-device default: amp "off", channels_last false in its
    config.json and checkpoints) resumes on fp32 where the default is the fast path: nothing to reconcile."""
    from repro.train import main

    cpu_with_bf16(monkeypatch, True)
    run = tmp_path / "run"
    common = ["--launcher", "local", "--no-progress", "--set", "threads=1"]
    assert main(["--preset", "smoke", "--precision", "fp32", "--run-dir", str(run), *common]) == 0
    assert main(["--resume", str(run), "--set", "steps=3", *common]) == 0, capsys.readouterr().err[-500:]
    record = json.loads((run / "provenance.json").read_text())
    assert record["precision"] == "fp32" and record["result"]["step"] == 3


def test_precision_flag_sets_the_speed_path_and_dry_run_names_it(capsys):
    from repro.train import main

    default = precision.default_precision("auto")  # this machine's: the dry run trains nothing elsewhere
    chosen = PRECISIONS[default]
    for argv, shown, fields in (([], f"precision: {default} (amp={chosen['amp']}, channels_last="
                                 f"{str(chosen['channels_last']).lower()}", (chosen["amp"], chosen["channels_last"])),
                                (["--precision", "fp32"], "precision: fp32 (amp=off, channels_last=false",
                                 ("off", False)),
                                (["--precision", "channels_last+bf16"], "precision: channels_last+bf16 (amp=bf16, "
                                 "channels_last=true", ("bf16", True)),
                                (["--precision", "bf16"], "precision: bf16 (amp=bf16, channels_last=false", ("bf16", False))):
        assert main(["--preset", "smoke", *argv, "--dry-run"]) == 0
        out = capsys.readouterr().out
        config = json.loads(out.partition("\n}\n")[0] + "}")
        assert (config["amp"], config["channels_last"]) == fields and shown in out, out[-300:]
    assert main(["--preset", "smoke", "--precision", "bf16", "--set", "amp=fp16", "--dry-run"]) == 2
    assert "leave out --set amp" in capsys.readouterr().err


def test_bf16_autocast_runs_convolutions_in_bf16_and_losses_in_fp32(images, tmp_path):
    trainer = Trainer(smoke(amp="bf16"), tmp_path)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    trainer.parts.model.generator.upconv.deconv5.register_forward_hook(record("G"))
    trainer.parts.discriminator.convs.Dconv1.register_forward_hook(record("D"))
    trainer.step(images)
    assert seen == {"G": torch.bfloat16, "D": torch.bfloat16}
    for p in trainer.g_params + trainer.d_params:
        assert p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)


def test_real_image_features_are_computed_once_per_step(images, tmp_path):
    """Comparator = encoder at the same tap: the network runs on the real batch once (as the encoder, its
    output reused as C(x)) and on the fake batch once, never twice on the same images."""
    trainer = Trainer(smoke(), tmp_path)
    assert trainer.parts.shares_features
    batches = []
    trainer.parts.comparator.net.register_forward_pre_hook(lambda m, args, kwargs: batches.append(args[0]),
                                                           with_kwargs=True)
    trainer.step(images)
    assert len(batches) == 2, f"the comparator network ran {len(batches)} times in one step"


def test_fast_adam_matches_the_per_tensor_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((64, 32, 3, 3), (64,), (10, 64))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fast = make_adam(params, torch.device("cpu"), lr=2e-4, betas=(0.9, 0.999), weight_decay=4e-4)
    plain = torch.optim.Adam(twins, lr=2e-4, betas=(0.9, 0.999), weight_decay=4e-4, foreach=False)
    assert fast.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for group, opt in ((params, fast), (twins, plain)):
            for p, g in zip(group, grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch._inductor.config
    torch._inductor.config.fallback_random = True  # dropout draws eager's masks, so values are comparable
    torch.set_num_threads(2)
    from repro.assets import asset_folder
    from repro.config import make_config
    from repro.data import list_images, load_images
    from repro.loop import Trainer
    images = load_images(list_images(asset_folder("caltech101", verify=False))[:8:2], 64)
    out = {}
    for name, compiled in (("eager", "false"), ("compiled", "true")):
        trainer = Trainer(make_config("smoke", {"compile": compiled}), sys.argv[1])
        torch.manual_seed(1)
        out[name] = [trainer.step(images) for _ in range(%d)]
    print(json.dumps(out))
""" % STEPS)


@pytest.mark.slow
def test_compile_matches_eager(tmp_path):
    try:
        done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=COMPILE_BUDGET_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"torch.compile (inductor) took more than {COMPILE_BUDGET_S} s to compile on this machine "
                    "(cold inductor cache on 2 CPU cores); run once to warm ~/.cache or /tmp/torchinductor_*")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    errors = worst_relative_error(out["eager"], out["compiled"])
    assert max(errors.values()) < 1e-4, errors
