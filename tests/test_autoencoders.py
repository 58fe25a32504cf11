"""The DeePSiM VAE and the autoencoders (paper §4.2): Eq. 8 through the VAE path, z = μ + σ⊙ε, sampling,
each autoencoder loss learning on real images, and the encoder's initialisation rule."""
from __future__ import annotations

import json
import math

import pytest
import torch

from repro.autoencoders import VAE, Autoencoder, build_model
from repro.config import make_config
from repro.loop import Session, Trainer, train
from repro.losses import generator_terms

R = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(model: str, **overrides):
    """A tiny VAE/AE on the smoke preset: 64 px, narrow nets, small code."""
    values = dict(model=model, latent_dim=32, generator_width=0.125, discriminator_width=0.25)
    values.update(overrides)
    return make_config("smoke", {k: str(v) for k, v in values.items()})


@pytest.fixture(scope="module")
def caltech_batch(assets):
    """8 real Caltech-101 images from 8 different classes, centre-cropped at 64 px."""
    from repro.data import list_images, load_images

    files = list_images(assets / "caltech101")
    picked = [files[i * len(files) // 8] for i in range(8)]
    assert len({f.parent for f in picked}) == 8
    return load_images(picked, R)


def set_heads(model: VAE, mu: torch.Tensor, logvar: torch.Tensor) -> None:
    """Make the encoder predict these μ and log σ² for every image (zero weights, the values as biases)."""
    with torch.no_grad():
        for head, value in ((model.encoder.fc6_mu, mu), (model.encoder.fc6_logvar, logvar)):
            head.weight.zero_()
            head.bias.copy_(value)


# ---- Eq. 7–8 through the VAE path -----------------------------------------------------------------
def test_kl_term_is_eq8_through_the_vae_path(tmp_path, caltech_batch):
    # recon = 1 − SSIM (≤ 1), so that the total shows the λ_KL·KL part to float32 precision (eager fp32 pinned:
    # the device's default path would run the heads in bf16)
    trainer = Trainer(tiny("vae", latent_dim=4, recon_loss="ssim", lambda_kl=20.0, amp="off", channels_last=False),
                      tmp_path)
    model = trainer.parts.model
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0])
    logvar = torch.tensor([0.0, math.log(4.0), math.log(0.25), math.log(9.0)])
    set_heads(model, mu, logvar)
    # Eq. 8 by hand, per sample: ½ Σ_j (μ_j² + σ_j² − log σ_j²)
    #   = ½ [(1 + 1 − 0) + (4 + 4 − ln 4) + (0.25 + 0.25 + ln 4) + (0 + 9 − ln 9)] = 9.75 − ½ ln 9
    expected_kl = 9.75 - 0.5 * math.log(9.0)
    values = trainer.step(caltech_batch[:4])
    assert values["kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert values["total"] == pytest.approx(values["recon"] + 20.0 * expected_kl, rel=1e-5)
    # "we allow the encoder weights to be adjusted": the pretrained trunk is optimised with the decoder
    optimised = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in model.encoder.parameters())


def test_frozen_encoder_steps_update_the_decoder_only_then_both(tmp_path, caltech_batch):
    trainer = Trainer(tiny("vae", latent_dim=4, freeze_encoder_steps=2), tmp_path)
    model = trainer.parts.model

    def snapshot():
        return ([p.detach().clone() for p in model.encoder.parameters()],
                [p.detach().clone() for p in model.decoder.parameters()])

    def moved(before, after):
        return any(not torch.equal(a, b) for a, b in zip(before, after))

    for step, encoder_moves in ((0, False), (1, False), (2, True)):  # the checkpointed iteration counter
        trainer.step_count = step
        (enc0, dec0) = snapshot()
        trainer.step(caltech_batch[:4])
        trainer.settle()
        (enc1, dec1) = snapshot()
        assert moved(dec0, dec1), step
        assert moved(enc0, enc1) == encoder_moves, step


def test_a_held_trunk_stays_while_the_heads_and_decoder_train(tmp_path, caltech_batch):
    trainer = Trainer(tiny("vae", latent_dim=4, fine_tune_trunk=False), tmp_path)
    encoder = trainer.parts.model.encoder
    trunk = [p.detach().clone() for p in encoder.trunk.parameters()]
    heads = [p.detach().clone() for p in encoder.fc6_mu.parameters()]
    trainer.step(caltech_batch[:4])
    trainer.settle()
    assert all(torch.equal(a, b) for a, b in zip(trunk, encoder.trunk.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(heads, encoder.fc6_mu.parameters()))


def test_reparameterisation_uses_the_global_rng_and_eval_decodes_mu(caltech_batch):
    torch.manual_seed(0)
    model, _ = build_model(tiny("vae", latent_dim=4))
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0])
    logvar = torch.tensor([0.0, math.log(4.0), math.log(0.25), math.log(9.0)])
    set_heads(model, mu, logvar)
    images = caltech_batch[:3]
    model.train()
    torch.manual_seed(11)
    _, aux = model(images)
    torch.manual_seed(11)
    eps = torch.randn(3, 4)
    assert torch.allclose(aux["code"], mu + torch.tensor([1.0, 2.0, 0.5, 3.0]) * eps, atol=1e-6)
    assert torch.equal(aux["mu"], mu.expand(3, 4)) and torch.equal(aux["logvar"], logvar.expand(3, 4))
    model.eval()
    _, aux_eval = model(images)
    assert torch.equal(aux_eval["code"], aux_eval["mu"])


# ---- sampling -------------------------------------------------------------------------------------
def test_sampling_shapes_and_seed_determinism():
    from repro.evaluation.figures import sample_images

    torch.manual_seed(0)
    model, _ = build_model(tiny("vae"))
    a = sample_images(model, 6, seed=3)
    assert a.shape == (6, 3, R, R) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, sample_images(model, 6, seed=3))
    assert not torch.equal(a, sample_images(model, 6, seed=4))
    z = torch.randn(6, 32, generator=torch.Generator().manual_seed(3))  # the paper's z = ε, decoded
    assert torch.allclose(a, model.decode(z).clamp(0, 1), atol=1e-6)


def test_sample_cli_on_a_vae_run_and_rejects_other_runs(tmp_path, capsys):
    from PIL import Image

    from repro.sample import main

    config = tiny("vae", recon_loss="se", steps=1)
    run_dir = tmp_path / "vae"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.to_json())
    train(config, run_dir, Session(show_progress=False))
    out = tmp_path / "samples.webp"
    assert main([str(run_dir), "--n", "4", "--seed", "0", "--out", str(out)]) == 0
    first = out.read_bytes()
    assert Image.open(out).size == (2 * R + 3 * 2, 2 * R + 3 * 2)  # 2×2 grid, padding 2
    assert main([str(run_dir), "--n", "4", "--seed", "0", "--out", str(out)]) == 0
    assert out.read_bytes() == first
    assert main([str(run_dir), "--n", "4", "--seed", "1", "--out", str(out)]) == 0
    assert out.read_bytes() != first

    inversion = tmp_path / "inversion"
    inversion.mkdir()
    (inversion / "config.json").write_text(make_config("smoke").to_json())
    capsys.readouterr()
    assert main([str(inversion), "--n", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model=inversion" in err and "model=vae" in err


# ---- every autoencoder loss learns --------------------------------------------------------------
def own_loss(trainer: Trainer, images: torch.Tensor) -> float:
    """The λ-weighted generator loss the model is trained with, on a fixed batch (D in eval mode)."""
    parts = trainer.parts
    with torch.no_grad():
        fake, _ = parts.model(images)
        features = {}
        if parts.comparator is not None:
            features = {"fake_features": parts.comparator(fake), "real_features": parts.comparator(images)}
        logits = None
        if parts.discriminator is not None:
            parts.discriminator.eval()
            logits = parts.discriminator(fake)
        terms = generator_terms(fake, images, trainer.lambdas, logits_fake=logits, recon=trainer.config.recon_loss,
                                **features)
    return float(terms["total"])


# (loss, steps): MS-SSIM learns fastest and costs most per step
@pytest.mark.parametrize("recon, steps", [("se", 40), ("l1", 40), ("ms-ssim", 20), ("deepsim", 40)])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # D held fixed
def test_each_autoencoder_loss_reduces_its_own_loss(tmp_path, caltech_batch, recon, steps):
    """20–40 Adam steps (lr 3e-3) through the loop's step on one batch of 8 real images must lower the loss
    on that batch by 10 %. For deepsim, D is held fixed (the balancing rule's pause): with D training, the
    adversarial game makes the total non-monotone over a few steps; the D phase is tested in test_loop."""
    trainer = Trainer(tiny("autoencoder", recon_loss=recon, lr=3e-3, batch_size=8), tmp_path)
    assert isinstance(trainer.parts.model, Autoencoder)
    assert (trainer.parts.comparator is not None) == (recon == "deepsim")
    if recon == "deepsim":
        trainer.balance.d_training, trainer.balance.resume_d_above = False, float("inf")
        trainer.balance.pause_g_above = float("inf")
    before = own_loss(trainer, caltech_batch)
    for _ in range(steps):
        values = trainer.step(caltech_batch)
        assert math.isfinite(values["total"])
    after = own_loss(trainer, caltech_batch)
    assert after < 0.9 * before, f"{recon}: loss {before:.4g} → {after:.4g} after {steps} steps on the same batch"


# ---- encoder initialisation rule (paper: AlexNet weights with the AlexNet comparator, else random) ----
TRUNK_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def trunk_weights(encoder) -> dict[str, torch.Tensor]:
    return {name: getattr(encoder.trunk, name)[0].weight.detach() for name in TRUNK_CONVS}


def test_vae_encoder_starts_from_the_pretrained_comparator_only_when_it_is_alexnet(pretrained_alexnet):
    from repro.comparators import build_comparator

    pretrained = {name: pretrained_alexnet.stages[name][0].weight for name in TRUNK_CONVS}
    _, encoder = build_model(tiny("vae", comparator="alexnet"))
    assert "pretrained" in encoder.init_origin
    assert all(torch.equal(w, pretrained[name]) for name, w in trunk_weights(encoder).items())

    # VideoNet: the paper's random-init case (its weights file is only named: build_model reads no comparator)
    for comparator, weights in (("videonet", "/data/color_model.caffemodel"), ("alexnet-random", "")):
        torch.manual_seed(0)  # as the loop does before building anything
        _, encoder = build_model(tiny("vae", comparator=comparator, comparator_weights=weights))
        assert encoder.init_origin.startswith("random")
        assert all(not torch.equal(w, pretrained[name]) for name, w in trunk_weights(encoder).items())
    random_comparator = build_comparator("alexnet-random", "pool5", R, seed=0).net
    assert not torch.equal(trunk_weights(encoder)["conv1"], random_comparator.stages["conv1"][0].weight)


def test_vae_trains_its_encoder_with_a_feature_conditioned_discriminator(tmp_path, caltech_batch):
    """DeePSiM VAE step with D conditioned on the code (the loop reads the code shape from the returned
    encoder); the pretrained trunk moves."""
    trainer = Trainer(tiny("vae", discriminator_features="true"), tmp_path)
    conv1 = trainer.parts.model.encoder.trunk.conv1[0].weight.detach().clone()
    values = trainer.step(caltech_batch[:4])
    assert not torch.equal(conv1, trainer.parts.model.encoder.trunk.conv1[0].weight)  # the encoder is fine-tuned
    assert {"feat", "adv", "img", "kl", "discr"} <= set(values)
    assert all(math.isfinite(values[k]) for k in ("feat", "adv", "img", "kl", "discr"))


def test_build_model_rejects_inversion_and_unknown_encoders():
    with pytest.raises(ValueError, match="inversion"):
        build_model(make_config("smoke"))
    with pytest.raises(ValueError, match="encoder='videonet'"):
        build_model(tiny("vae", encoder="videonet"))


def test_compare_autoencoders_dry_run_resolves_every_model(capsys):
    from repro.compare_autoencoders import main

    assert main(["--steps", "3", "--resolution", "64", "--vae", "--dry-run"]) == 0
    configs = json.loads(capsys.readouterr().out)
    assert {c["recon_loss"] for c in configs.values() if c["model"] == "autoencoder"} == {"se", "l1", "ms-ssim", "deepsim"}
    vaes = [c for c in configs.values() if c["model"] == "vae"]
    assert sorted(c["recon_loss"] for c in vaes) == ["deepsim", "se"]
    assert all(c["steps"] == 3 and c["resolution"] == 64 for c in configs.values())
    assert main(["--losses", "mse"]) == 2


def test_compare_autoencoders_run_folders_carry_provenance(tmp_path, one_thread):
    """Every run folder it trains has the same provenance.json as a `repro.train` run (issue 18: one writer)."""
    from repro.compare_autoencoders import main

    out, runs = tmp_path / "out", tmp_path / "runs"
    assert main(["--losses", "se", "--steps", "2", "--resolution", "64", "--n-eval", "8", "--grid-images", "2",
                 "--set", "batch_size=4", "--set", "generator_width=0.125", "--out", str(out), "--runs-dir", str(runs),
                 "--no-progress"]) == 0
    record = json.loads((runs / "ae-se" / "provenance.json").read_text())
    assert {"command", "commit", "data", "weights", "device", "torch", "created", "wall_time_s", "config"} <= set(record)
    assert record["config"]["recon_loss"] == "se" and record["status"] == "finished"
    summary = json.loads((out / "metrics.json").read_text())["provenance"]
    assert summary["commit"] == record["commit"] and summary["n_eval"] == 8
