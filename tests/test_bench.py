"""bench.throughput times the loop's own step: the variants it (and the GPU check) times, the profiler ranges
of `Trainer.step`, the shares by network they feed, and one tiny run of the command."""
from __future__ import annotations

import json

import pytest
import torch

from bench import phases
from bench.throughput import main
from bench.timing import step_seconds
from bench.variants import fp32_flags, fp32_mode, make_trainer, variant
from repro.config import make_config
from repro.errors import UsageError
from repro.precision import PRECISIONS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trainer():
    return make_trainer("smoke", overrides={"threads": 1})


@pytest.fixture(scope="module")
def real(trainer):
    config = trainer.config
    return torch.rand(config.batch_size, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_a_variant_named_like_a_training_precision_sets_the_same_config_fields(name):
    fields = ("amp", "channels_last", "compile")
    trained, timed = make_config("smoke", PRECISIONS[name]), make_config("smoke", variant(name).overrides)
    assert [getattr(timed, k) for k in fields] == [getattr(trained, k) for k in fields]


def test_variants_say_their_fp32_mode_and_peak_and_refuse_unknown_options():
    assert (variant("fp32").fp32, variant("fp32").peak) == ("ieee", "fp32")
    assert (variant("tf32").fp32, variant("tf32").peak) == ("tf32", "tf32")
    assert (variant("channels_last+bf16+compile").fp32, variant("channels_last+bf16+compile").peak) == (None, "bf16")
    assert variant("channels_last+bf16+compile").overrides == {"amp": "bf16", "channels_last": True, "compile": True}
    with pytest.raises(UsageError, match="unknown variant option 'fp16'"):  # one line, exit 2 in a command
        variant("channels_last+fp16")


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9")
def test_true_fp32_turns_tf32_off_in_cublas_and_cudnn_and_restores_the_defaults():
    before = fp32_flags()
    with fp32_mode("ieee"):
        assert fp32_flags() == {"matmul": "ieee", "cudnn_conv": "ieee"}
        assert torch.backends.cudnn.rnn.fp32_precision == "ieee"  # conv and rnn alike, or torch refuses reads
    with fp32_mode("tf32"):
        assert fp32_flags() == {"matmul": "tf32", "cudnn_conv": "tf32"}
    assert fp32_flags() == before
    assert torch.backends.cudnn.allow_tf32 in (True, False), "the legacy flag still reads after the restore"


def test_a_variants_trainer_steps_in_its_fp32_mode(monkeypatch):
    trainer = make_trainer("smoke", "tf32", {"threads": 1})
    before, seen = fp32_flags(), []
    monkeypatch.setattr(trainer.parts.model, "forward", lambda *a, wrapped=trainer.parts.model.forward:
                        seen.append(fp32_flags()) or wrapped(*a))
    trainer.step(torch.rand(trainer.config.batch_size, 3, trainer.config.resolution, trainer.config.resolution))
    assert seen and all(flags == {"matmul": "tf32", "cudnn_conv": "tf32"} for flags in seen)
    assert fp32_flags() == before != seen[0], "the mode holds inside the step only"


def test_every_backward_op_of_a_convolution_goes_to_its_network(trainer, real):
    trainer.step(real)
    prof = phases.profile_steps(trainer, real, 1, with_nets=True)
    labelled = list(phases.attribute(prof.events()))
    backward = [(e, share) for e, share in labelled if e.name == phases.BACKWARD + "ConvolutionBackward0"]
    # D: real, fake (phase 1) and fake (phase 2); comparator on the fake; G's transposed convolutions
    assert backward and {share for _, share in backward} == {"comparator", "generator", "discriminator"}
    ranges = {e.name for e, _ in labelled}
    assert {"step/data", "step/forward", "step/discriminator", "step/generator"} <= ranges


def test_phase_seconds_and_fractions_of_the_loops_step(trainer, real):
    measured = phases.measure(trainer, real, steps=1)
    seconds, fractions = measured["phase_seconds"], measured["fractions"]
    assert set(seconds) == {"step", "data", "forward", "discriminator", "generator"}
    assert all(v > 0 for v in seconds.values())
    assert sum(v for k, v in seconds.items() if k != "step") <= seconds["step"]
    assert set(fractions) == set(phases.SHARES) and sum(fractions.values()) == pytest.approx(1.0)
    assert min(fractions[k] for k in phases.NETS) > 0


def test_step_seconds_runs_the_loops_own_step(trainer, real):
    def g_updates() -> int:  # the balancing rule is held open: every step updates G
        return int(trainer.opt_g.state[trainer.g_params[0]]["step"])

    before = g_updates()
    seconds = step_seconds({"fp32": trainer}, real, rounds=2, per_round=1)
    assert len(seconds["fp32"]) == 2 and all(s > 0 for s in seconds["fp32"])
    assert g_updates() - before == 2 * (2 + 1)  # each round: Timer's two warm-up steps, then the timed one


def test_a_tiny_run_writes_its_record_and_summary(tmp_path):
    out = tmp_path / "perf"
    assert main(["--presets", "smoke", "--resolutions", "64", "--variants", "channels_last", "--steps", "1",
                 "--rounds", "1", "--warmup", "1", "--threads", "1", "--data-images", "8", "--no-memory",
                 "--out", str(out)]) == 0
    record = json.loads((out / "cpu-smoke-r64.json").read_text())
    assert set(record["variants"]) == {"fp32", "channels_last"}
    for variant in record["variants"].values():
        assert variant["step_s"] > 0 and sum(variant["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert record["flops_per_step"] > 0 and record["provenance"]["threads"] == 1
    assert "| channels_last |" in (out / "summary-cpu.md").read_text()
