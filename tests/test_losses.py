"""Loss terms in the paper's Caffe units, checked on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from repro.losses import (adversarial_loss, caffe_euclidean, discriminator_loss, feature_loss, generator_terms,
                          image_loss, kl_loss)


def test_caffe_euclidean_is_half_sum_over_batch():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 2.0]])
    # ½·(1 + 4 + 0 + 4) / N=2
    assert caffe_euclidean(a, b).item() == pytest.approx(9 / 4)


def test_image_loss_uses_0_255_units():
    real = torch.zeros(2, 3, 2, 2)
    fake = real.clone()
    fake[0, 0, 0, 0] = 1.0 / 255  # one pixel off by one grey level in 0–255 units
    assert image_loss(fake, real).item() == pytest.approx(0.5 * 1.0 / 2)
    # the paper's weight on a uniform error of 10 grey levels over a 227×227 RGB image:
    fake = torch.full((1, 3, 227, 227), 10 / 255)
    weighted = 2e-6 * image_loss(fake, torch.zeros_like(fake)).item()
    assert weighted == pytest.approx(2e-6 * 0.5 * 100 * 3 * 227 * 227, rel=1e-4)


def test_feature_loss_stops_gradient_into_real_features():
    real = torch.ones(2, 4, requires_grad=True)
    fake = torch.zeros(2, 4, requires_grad=True)
    feature_loss(fake, real).backward()
    assert real.grad is None and fake.grad is not None


def test_adversarial_terms_are_softmax_cross_entropies():
    confident_real = torch.tensor([[-10.0, 10.0]])
    confident_fake = torch.tensor([[10.0, -10.0]])
    assert discriminator_loss(confident_real, confident_fake).item() < 1e-6
    # non-saturating G loss: -log D(G(y)) with D(G(y)) = softmax = 0.5 → log 2
    assert adversarial_loss(torch.zeros(3, 2)).item() == pytest.approx(math.log(2))
    assert adversarial_loss(confident_fake).item() == pytest.approx(20.0, rel=1e-4)


def test_kl_is_equation_8():
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # sample 1: ½(‖μ‖²=5 + ‖σ‖²=1+4 − (0 + log 4)); sample 2: ½(0 + 2 − 0); divided by N=2
    expected = (0.5 * (5 + 5 - math.log(4.0)) + 0.5 * 2) / 2
    assert kl_loss(mu, logvar).item() == pytest.approx(expected)


def test_generator_terms_skip_switched_off_terms_and_weight_the_rest():
    real = torch.rand(2, 3, 8, 8)
    fake = torch.rand(2, 3, 8, 8)
    feats = torch.rand(2, 5), torch.rand(2, 5)
    logits = torch.randn(2, 2)
    terms = generator_terms(fake, real, {"feat": 0.01, "adv": 100.0, "img": 2e-6}, fake_features=feats[0],
                            real_features=feats[1], logits_fake=logits)
    expected = 0.01 * terms["feat"] + 100 * terms["adv"] + 2e-6 * terms["img"]
    assert torch.allclose(terms["total"], expected)
    only_img = generator_terms(fake, real, {"feat": 0.0, "adv": 0.0, "img": 2e-6})
    assert set(only_img) == {"img", "total"}
    with pytest.raises(ValueError, match="switched off"):
        generator_terms(fake, real, {"feat": 0.0, "adv": 0.0, "img": 0.0})


# ---- DeePSiMLoss: the loss as a module, in a loop that is not the project's -------------------------------

def tiny_generator(code_dim: int = 16, side: int = 64) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(code_dim, 3 * side * side), torch.nn.Unflatten(1, (3, side, side)),
                               torch.nn.Sigmoid())


def test_deepsim_loss_trains_a_tiny_generator_in_a_hand_written_loop():
    """The docstring's loop, verbatim in spirit: the caller owns both optimisers and both phases."""
    from repro import DeePSiMLoss
    from repro.nets.discriminator import Discriminator

    torch.manual_seed(0)
    real, code = torch.rand(4, 3, 64, 64), torch.randn(4, 16)
    generator, discriminator = tiny_generator(), Discriminator(resolution=64, width=0.25)
    loss = DeePSiMLoss("alexnet-random", "pool5", resolution=64, discriminator=discriminator, lambda_feat=0.01,
                       lambda_adv=1.0, lambda_kl=0.0)
    opt_g = torch.optim.Adam(generator.parameters(), 1e-2)
    opt_d = torch.optim.Adam(discriminator.parameters(), 2e-4)
    totals, recon = [], []
    for _ in range(15):
        fake = generator(code)
        opt_d.zero_grad()
        d_loss = loss.discriminator_loss(fake.detach(), real)
        d_loss.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        terms = loss(fake, real)
        discriminator.requires_grad_(True)
        opt_g.zero_grad()
        terms["total"].backward()
        opt_g.step()
        assert set(terms) == {"feat", "adv", "img", "total"} and d_loss.item() > 0
        totals.append(terms["total"].item())
        recon.append(terms["feat"].item() * 0.01 + terms["img"].item() * 2e-6)
    assert totals[-1] < 0.7 * totals[0], totals
    assert recon[-1] < 0.5 * recon[0], recon
    # the comparator is frozen: no gradient reached it
    assert all(p.grad is None for p in loss.comparator.parameters())


def test_deepsim_loss_terms_are_the_pure_functions():
    from repro import DeePSiMLoss
    from repro.nets.discriminator import Discriminator

    torch.manual_seed(1)
    real, fake = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    discriminator = Discriminator(resolution=64, width=0.25).eval()
    loss = DeePSiMLoss("alexnet-random", "pool5", resolution=64, discriminator=discriminator, lambda_feat=0.01,
                       lambda_adv=100.0)
    terms = loss(fake, real)
    with torch.no_grad():
        feat = feature_loss(loss.comparator(fake), loss.comparator(real))
        adv = adversarial_loss(discriminator(fake))
    assert terms["feat"].item() == pytest.approx(feat.item(), rel=1e-6)
    assert terms["adv"].item() == pytest.approx(adv.item(), rel=1e-6)
    assert terms["img"].item() == pytest.approx(image_loss(fake, real).item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(0.01 * feat.item() + 100 * adv.item() + 2e-6 * terms["img"].item(),
                                                  rel=1e-5)
    assert loss.discriminator_loss(fake, real).item() == pytest.approx(
        discriminator_loss(discriminator(real), discriminator(fake)).item(), rel=1e-6)
    # identical images: no feature or image loss (the wrong answer, a nonzero loss, would fail here)
    same = loss(real, real)
    assert same["feat"].item() == 0 and same["img"].item() == 0


@pytest.mark.parametrize("recon", ["ssim", "ms-ssim"])
def test_ssim_terms_are_computed_in_fp32_under_bf16_autocast(recon):
    """Autocast would run SSIM's Gaussian filters in bf16, where σ² = E[x²] − E[x]² cancels to negative values and
    MS-SSIM's powers give NaN (the autoencoder baselines' first step under --precision bf16 did): same value as
    outside autocast."""
    from repro import DeePSiMLoss

    generator = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 64, 64, generator=generator)
    fake = (real + 0.05 * torch.randn(real.shape, generator=generator)).clamp(0, 1)
    loss = DeePSiMLoss(None, lambda_feat=0.0, lambda_adv=0.0, lambda_kl=0.0, recon=recon)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(fake, real)["recon"]
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == loss(fake, real)["recon"].item()


def test_deepsim_loss_refuses_incomplete_setups():
    from repro import DeePSiMLoss

    with pytest.raises(ValueError, match="needs a discriminator"):
        DeePSiMLoss("alexnet-random", "pool5", resolution=64, lambda_feat=0.01)
    with pytest.raises(ValueError, match="needs a comparator"):
        DeePSiMLoss(None, lambda_adv=0.0)
    loss = DeePSiMLoss(None, lambda_feat=0.0, lambda_adv=0.0)  # image loss only: no network built
    assert loss.comparator is None and set(loss(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))) == {"img", "total"}
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 9, 9))


def test_deepsim_loss_docstring_example_runs_as_written():
    """The class docstring's loop, executed verbatim on a tiny generator of 227 px images."""
    import textwrap

    from repro import DeePSiMLoss

    example = textwrap.dedent(DeePSiMLoss.__doc__.split("::\n", 1)[1].split("\n\n    Args:")[0])
    torch.manual_seed(0)
    scope = {"torch": torch, "G": tiny_generator(16, 227), "code": torch.randn(2, 16), "real": torch.rand(2, 3, 227, 227)}
    before = [p.detach().clone() for p in scope["G"].parameters()]
    exec(compile(example, "DeePSiMLoss docstring", "exec"), scope)
    assert set(scope["terms"]) == {"feat", "adv", "img", "total"}
    assert any(not torch.equal(a, b) for a, b in zip(before, scope["G"].parameters()))  # G was updated


def test_deepsim_loss_takes_the_projects_lambda_at_its_resolution():
    """λ left out come from the project's rule (repro.lambda_rule.reduced_lambdas) at `resolution`: the paper's at 227
    px, the reduced ones at 64 px; a side the rule has no measured ratio for is a clear error, and images of
    another side than the rule's λ were taken for are refused."""
    from repro import DeePSiMLoss
    from repro.lambda_rule import reduced_lambdas
    from repro.losses import LossError
    from repro.nets.discriminator import Discriminator

    paper = DeePSiMLoss(None, lambda_feat=0.0, resolution=227, discriminator=Discriminator(227, width=0.25))
    assert paper.lambdas == {"feat": 0.0, "adv": 100.0, "img": 2e-6, "kl": 20.0}
    small = DeePSiMLoss("alexnet", "pool5", resolution=64, discriminator=Discriminator(64, width=0.25))
    rule = reduced_lambdas(64)
    assert small.lambdas == {"feat": rule["lambda_feat"], "adv": rule["lambda_adv"], "img": 2e-6,
                             "kl": rule["lambda_kl"]}
    assert small.lambdas["adv"] == pytest.approx(100 * (64 / 227) ** 2, abs=0.01)
    with pytest.raises(LossError, match="no measured ratios at 128 px .*pass lambda_feat, lambda_adv and lambda_kl"):
        DeePSiMLoss("alexnet", "pool5", resolution=128, lambda_adv=0.0)
    with pytest.raises(LossError, match="no measured feature/image ratio of alexnet-random:pool5 at 64 px"):
        DeePSiMLoss("alexnet-random", "pool5", resolution=64, lambda_adv=0.0)
    explicit = DeePSiMLoss("alexnet-random", "pool5", resolution=128, lambda_feat=0.01, lambda_adv=0.0, lambda_kl=0.0)
    assert explicit.lambdas["feat"] == 0.01 and set(explicit(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))) \
        == {"feat", "img", "total"}  # explicit λ: any side
    with pytest.raises(LossError, match=r"λ_feat from the project's rule at 64 px, but the images are 96×96: build "
                                        r"it with resolution=96"):
        DeePSiMLoss("alexnet", "pool5", resolution=64, lambda_adv=0.0)(torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96))


def test_deepsim_loss_refuses_images_it_would_silently_misread():
    """uint8, float64, 0–255 floats, −1..1 and too small images: one sentence each, saying what to pass (the
    0–255 case used to give a feature term of 2,479,785 instead of 76). data_range=255 takes 0–255 floats."""
    from repro import DeePSiMLoss
    from repro.losses import LossError

    loss = DeePSiMLoss("alexnet-random", "pool5", resolution=64, lambda_feat=0.01, lambda_adv=0.0, lambda_kl=0.0)
    torch.manual_seed(2)
    fake, real = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    cases = [
        ((fake * 255).to(torch.uint8), (real * 255).to(torch.uint8), r"fake images are uint8: .*images.float\(\) / 255"),
        (fake.double(), real.double(), r"fake images are float64: .*pass fake.float\(\)"),
        (fake * 255, real * 255, r"real images range over \[.*\], outside \[0, 1\] .*pass data_range=255"),
        (fake * 2 - 1, real * 2 - 1, r"for −1..1 images pass \(x \+ 1\) / 2"),
        (fake[:, :1], real[:, :1], r"must be images \(B, 3, H, W\) RGB, got shape \(2, 1, 64, 64\)"),
    ]
    for bad_fake, bad_real, message in cases:
        with pytest.raises(LossError, match=message):
            loss(bad_fake, bad_real)
    in_bytes = DeePSiMLoss("alexnet-random", "pool5", resolution=64, lambda_feat=0.01, lambda_adv=0.0, lambda_kl=0.0,
                           data_range=255)
    assert in_bytes(fake * 255, real * 255)["total"].item() == pytest.approx(loss(fake, real)["total"].item(), rel=1e-5)
    with pytest.raises(LossError, match=r"images of 16×16 px are too small for the comparator alexnet-random:pool5: "
                                        r"it needs at least 63×63"):
        loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    loss(torch.rand(1, 3, 63, 63), torch.rand(1, 3, 63, 63))  # the smallest side it named works


def test_readme_library_loop_runs_as_written():
    """The README's library example (DeePSiMLoss + Balance in a user's loop), executed verbatim at its 96 px."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("**The DeePSiM loss in your own loop**", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    torch.manual_seed(0)
    generator = tiny_generator(16, 96)
    batches = [(torch.randn(2, 16), torch.rand(2, 3, 96, 96)) for _ in range(3)]
    before = [p.detach().clone() for p in generator.parameters()]
    scope = {"G": generator, "batches": batches}
    exec(compile(example, "README library example", "exec"), scope)
    assert set(scope["terms"]) == {"feat", "adv", "img", "total"} and scope["balance"].updates == 3
    assert scope["loss"].lambdas["adv"] == pytest.approx(100 * (96 / 227) ** 2, abs=0.01)  # the rule's λ at 96 px
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.parameters()))
