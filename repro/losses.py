"""Loss terms of DeePSiM and its baselines: pure functions of explicit inputs, every term by name.

Units. The paper's λ (λ_feat = 0.01, λ_adv = 100, λ_img = 2e-6) multiply Caffe losses:
- EuclideanLoss = ½·Σ(a − b)² / N with N the batch size, on 0–255 BGR mean-subtracted images and on raw
  activations. Our images are RGB in [0, 1]; a difference × 255 is the Caffe difference (channel order
  and the mean cancel in a difference), so `image_loss` scales by 255 and reproduces Caffe exactly.
- SoftmaxWithLoss = mean over the batch of the 2-way cross-entropy.
Nothing here calls backward or touches an optimiser; the loop does. `DeePSiMLoss` bundles comparator, D and
λ into one module for use in any loop (the project's loop uses it too).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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

    Terms whose λ is 0 are not computed, so an ablation costs nothing for the dropped term — except the KL
    of a VAE, always reported (cheap, and the collapse diagnostic even at λ_KL = 0).
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
    if mu is not None:
        terms["kl"] = kl_loss(mu, logvar)
        weights["kl"] = lambdas.get("kl", 0.0)
    if not terms or not any(weights.values()):
        raise ValueError("every loss term is switched off (all λ are 0): nothing to train")
    terms["total"] = sum(weights[k] * terms[k] for k in weights)
    return terms


class DeePSiMLoss(nn.Module):
    """The DeePSiM loss (Eq. 1; Eq. 8 for a VAE) as a module, for any generator in any training loop.

    Built from a frozen comparator C (a registry name + tap, or a `Comparator`), the λ in the paper's Caffe
    units and an optional discriminator D. It holds no optimiser and calls no backward: the caller keeps both
    optimisers and runs the two GAN phases, as the project's own loop (`repro.loop.Trainer`) does with this
    very class. Inputs are pipeline images (B, 3, H, W) RGB in [0, 1].

    Example, a generator `G` trained in your own loop (one iteration: (1) update D, (2) update G)::

        from repro import DeePSiMLoss
        from repro.nets.discriminator import Discriminator

        D = Discriminator(resolution=227)
        loss = DeePSiMLoss("alexnet", "pool5", resolution=227, discriminator=D)   # λ: the paper's
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
        fake = G(code)
        opt_d.zero_grad()
        loss.discriminator_loss(fake.detach(), real).backward()           # (1) D phase
        opt_d.step()
        terms = loss(fake, real)              # {"feat": …, "adv": …, "img": …, "total": …}
        opt_g.zero_grad()
        terms["total"].backward()                                         # (2) G phase
        opt_g.step()

    Args:
        comparator: registry name (`repro.comparators.NETS`) or a built `Comparator`; None only when λ_feat = 0.
        tap: the comparator's layer when `comparator` is a name ("pool5" = the paper's CONV5).
        resolution: image side the comparator is built for (names only).
        weights: the comparator's weights file when the name needs one (caffenet, onnx, ...).
        lambda_feat, lambda_adv, lambda_img, lambda_kl: weights in the paper's Caffe units (`repro.losses`);
            λ_kl counts only when `mu`/`logvar` are passed.
        discriminator: D(images, condition) → (B, 2) logits; required when λ_adv > 0.
        recon: "deepsim" (Eq. 1), or one image-space loss ("se", "l1", "ssim", "ms-ssim": autoencoder baselines).
    """

    def __init__(self, comparator: "str | nn.Module | None" = "alexnet", tap: str = "pool5", *, resolution: int = 227,
                 weights: str | None = None, lambda_feat: float = 0.01, lambda_adv: float = 100.0,
                 lambda_img: float = 2e-6, lambda_kl: float = 0.0, discriminator: nn.Module | None = None,
                 recon: str = "deepsim", seed: int = 0):
        super().__init__()
        if recon != "deepsim" and recon not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"recon={recon!r}; choose from deepsim, {', '.join(RECONSTRUCTION_LOSSES)}")
        self.lambdas = {"feat": float(lambda_feat), "adv": float(lambda_adv), "img": float(lambda_img),
                        "kl": float(lambda_kl)}
        if any(v < 0 for v in self.lambdas.values()):
            raise ValueError(f"every λ must be ≥ 0, got {self.lambdas}")
        self.recon = recon
        deepsim = recon == "deepsim"
        if isinstance(comparator, str) and deepsim and lambda_feat > 0:
            from repro.comparators import build_comparator

            comparator = build_comparator(comparator, tap, resolution, weights, seed=seed)
        elif isinstance(comparator, str):
            comparator = None  # no feature term: do not build (or load) a network that is never used
        if deepsim and lambda_feat > 0 and comparator is None:
            raise ValueError("λ_feat > 0 needs a comparator (a registry name + tap, or a Comparator)")
        if deepsim and lambda_adv > 0 and discriminator is None:
            raise ValueError("λ_adv > 0 needs a discriminator; pass discriminator=D or set lambda_adv=0")
        self.comparator = comparator if deepsim and lambda_feat > 0 else None
        self.discriminator = discriminator if deepsim and lambda_adv > 0 else None

    def comparator_features(self, images: torch.Tensor) -> torch.Tensor | None:
        """C(x) of real images, without gradient (pass it back as `real_features` to compute it once)."""
        if self.comparator is None:
            return None
        with torch.no_grad():
            return self.comparator(images)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, real_features: torch.Tensor | None = None,
                condition: torch.Tensor | None = None, mu: torch.Tensor | None = None,
                logvar: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Generator terms by name ("feat", "adv", "img", "kl" or "recon") and their λ-weighted "total".

        fake: G's images (B, 3, H, W) [0, 1], with gradient; real: the targets, same shape. real_features:
        C(real) when already known (e.g. the encoder is the comparator); condition: what D is conditioned on
        (the code y, when D sees features). D runs on `fake` labelled "real" (the non-saturating L_adv); its
        own weights get gradients here only if the caller left them requiring grad (the loop switches D's
        `requires_grad_` off for this phase).
        """
        if fake.shape != real.shape:
            raise ValueError(f"fake and real must have the same shape, got {tuple(fake.shape)} and {tuple(real.shape)}")
        fake_features = logits_fake = None
        if self.comparator is not None:
            if real_features is None:
                real_features = self.comparator_features(real)
            fake_features = self.comparator(fake)
            real_features = real_features.reshape(fake_features.shape)  # a reused code may come flattened
            # λ_feat is in the reference comparator's balance of terms (repro.comparators, feature_scale)
            scale = getattr(self.comparator, "feature_scale", None)
            if scale is not None:
                fake_features, real_features = fake_features * scale, real_features * scale
        if self.discriminator is not None:
            logits_fake = self.discriminator(fake, condition)
        return generator_terms(_fp32(fake), _fp32(real), self.lambdas, fake_features=_fp32(fake_features),
                               real_features=_fp32(real_features), logits_fake=_fp32(logits_fake), mu=_fp32(mu),
                               logvar=_fp32(logvar), recon=self.recon)

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor,
                           condition: torch.Tensor | None = None) -> torch.Tensor:
        """L_discr (Eq. 3) for the D phase: D on `real` (label real) and `fake` (label fake; pass fake.detach())."""
        if self.discriminator is None:
            raise ValueError("this DeePSiMLoss has no discriminator (λ_adv = 0 or none given)")
        logits_real, logits_fake = self.discriminator(real, condition), self.discriminator(fake, condition)
        return discriminator_loss(_fp32(logits_real), _fp32(logits_fake))


def _fp32(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Losses are computed in fp32 even under bf16/fp16 autocast (a no-op on fp32 tensors)."""
    return None if tensor is None else tensor.float()
