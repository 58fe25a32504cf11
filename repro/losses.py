"""Loss terms of DeePSiM and its baselines: pure functions of explicit inputs, every term by name.

Units. The paper's λ (λ_feat = 0.01, λ_adv = 100, λ_img = 2e-6) multiply Caffe losses:
- EuclideanLoss = ½·Σ(a − b)² / N with N the batch size, on 0–255 BGR mean-subtracted images and on raw
  activations. Our images are RGB in [0, 1]; a difference × 255 is the Caffe difference (channel order
  and the mean cancel in a difference), so `image_loss` scales by 255 and reproduces Caffe exactly.
- SoftmaxWithLoss = mean over the batch of the 2-way cross-entropy.
Nothing here calls backward or touches an optimiser; the loop does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CAFFE_PIXEL_SCALE = 255.0
REAL, FAKE = 1, 0


def caffe_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Caffe's EuclideanLoss: ½·Σ(a − b)² / N, N = batch size (a sum over pixels/units, not a mean)."""
    if a.shape != b.shape:
        raise ValueError(f"euclidean loss needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a - b).pow(2).sum() / (2 * a.shape[0])


def image_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_img (Eq. 5) in Caffe units: pipeline images [0, 1] → 0–255 differences."""
    return caffe_euclidean(fake * CAFFE_PIXEL_SCALE, real * CAFFE_PIXEL_SCALE)


def feature_loss(fake_features: torch.Tensor, real_features: torch.Tensor) -> torch.Tensor:
    """L_feat (Eq. 2) in Caffe units on raw comparator activations."""
    return caffe_euclidean(fake_features, real_features.detach())


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_discr (Eq. 3) as the original: two SoftmaxWithLoss layers (real → 1, fake → 0), each a batch mean."""
    real = torch.full((logits_real.shape[0],), REAL, dtype=torch.long, device=logits_real.device)
    fake = torch.full((logits_fake.shape[0],), FAKE, dtype=torch.long, device=logits_fake.device)
    return F.cross_entropy(logits_real, real) + F.cross_entropy(logits_fake, fake)


def adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_adv (Eq. 4), the non-saturating form −log D(G(y)): fakes labelled real, batch mean."""
    real = torch.full((logits_fake.shape[0],), REAL, dtype=torch.long, device=logits_fake.device)
    return F.cross_entropy(logits_fake, real)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """L_KL exactly as Eq. 8: ½·Σ_i (‖μ_i‖² + ‖σ_i‖² − ⟨log σ_i², 1⟩), divided by N like every Caffe loss.

    Eq. 8 omits the constant −d of the textbook KL; a constant changes no gradient, so we keep the
    paper's form (the value is then d/2 per sample at the prior, not 0).
    """
    per_sample = mu.pow(2).sum(1) + logvar.exp().sum(1) - logvar.sum(1)
    return 0.5 * per_sample.sum() / mu.shape[0]


def l1_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """ℓ1 in Caffe-like units: Σ|Δ| / N on 0–255 images (autoencoder baseline)."""
    return (fake - real).abs().sum() * CAFFE_PIXEL_SCALE / fake.shape[0]


def ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 − SSIM (Ridgeway/Snell's perceptual loss), images clamped to the data range first."""
    from repro.ssim import ssim

    return 1.0 - ssim(fake.clamp(0, 1), real, data_range=1.0)


def ms_ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 − MS-SSIM; scales that do not fit small images are dropped (see repro.ssim)."""
    from repro.ssim import ms_ssim

    return 1.0 - ms_ssim(fake.clamp(0, 1), real, data_range=1.0)


RECONSTRUCTION_LOSSES = {"se": image_loss, "l1": l1_loss, "ssim": ssim_loss, "ms-ssim": ms_ssim_loss}


def generator_terms(
    fake: torch.Tensor,
    real: torch.Tensor,
    lambdas: dict[str, float],
    *,
    fake_features: torch.Tensor | None = None,
    real_features: torch.Tensor | None = None,
    logits_fake: torch.Tensor | None = None,
    mu: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
    recon: str = "deepsim",
) -> dict[str, torch.Tensor]:
    """Raw terms the generator minimises and their λ-weighted `total` (Eq. 1, plus Eq. 8 for the VAE).

    Terms whose λ is 0 are not computed, so an ablation costs nothing for the dropped term.
    `recon` other than "deepsim" replaces Eq. 1 by a single image-space loss (autoencoder baselines).
    """
    terms: dict[str, torch.Tensor] = {}
    if recon != "deepsim":
        terms["recon"] = RECONSTRUCTION_LOSSES[recon](fake, real)
        weights = {"recon": 1.0}
    else:
        if lambdas.get("feat", 0) > 0:
            terms["feat"] = feature_loss(fake_features, real_features)
        if lambdas.get("adv", 0) > 0:
            terms["adv"] = adversarial_loss(logits_fake)
        if lambdas.get("img", 0) > 0:
            terms["img"] = image_loss(fake, real)
        weights = {k: lambdas[k] for k in terms}
    if mu is not None and lambdas.get("kl", 0) > 0:
        terms["kl"] = kl_loss(mu, logvar)
        weights["kl"] = lambdas["kl"]
    if not terms:
        raise ValueError("every loss term is switched off (all λ are 0): nothing to train")
    terms["total"] = sum(weights[k] * terms[k] for k in weights)
    return terms
