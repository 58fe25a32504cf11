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

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from repro.comparators import build_comparator
from repro.config import Config, ConfigError
from repro.lambda_rule import FEATURE_IMAGE_RATIO_AT, reduced_lambdas
from repro.errors import DeepsimError
from repro.ssim import ms_ssim, ssim

CAFFE_PIXEL_SCALE = 255.0
_ALIASES = {"alexnet-tv": "alexnet"}  # registry names of one network (as repro.comparators)
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
    return 1.0 - ssim(fake.clamp(0, 1), real, data_range=1.0)


def ms_ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 − MS-SSIM; scales that do not fit small images are dropped (see repro.ssim)."""
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


class LossError(DeepsimError, ValueError):
    """A DeePSiMLoss that cannot be built as asked, or inputs it cannot take; the message says what to pass."""


def _rule_lambdas(resolution: int, comparator: tuple[str, str] | None) -> dict[str, float]:
    """λ_feat, λ_adv and λ_KL at `resolution` by the project's rule (`repro.lambda_rule.reduced_lambdas`): the
    paper's at 227 px for any comparator (its feature scale already puts it in the reference's units); at
    another side λ_adv and λ_KL scale by (R/227)², and λ_feat needs the comparator's measured feature/image
    ratio there (`FEATURE_IMAGE_RATIO_AT`). Raises LossError naming what is not measured and what to pass."""
    if resolution == 227:
        return {"lambda_feat": Config.lambda_feat, "lambda_adv": Config.lambda_adv, "lambda_img": Config.lambda_img,
                "lambda_kl": Config.lambda_kl}
    measured = sorted(k for k in FEATURE_IMAGE_RATIO_AT[("alexnet", "pool5")] if isinstance(k, int))
    try:
        out = {**reduced_lambdas(resolution), "lambda_img": Config.lambda_img}  # per-sample λ: any comparator
    except ConfigError:
        raise LossError(f"the project's λ rule (repro.lambda_rule.reduced_lambdas) has no measured ratios at {resolution} "
                        f"px (only at {', '.join(map(str, measured))} px): pass lambda_feat, lambda_adv and "
                        "lambda_kl explicitly, or use one of those resolutions") from None
    if comparator is not None:
        try:
            out["lambda_feat"] = reduced_lambdas(resolution, comparator)["lambda_feat"]
        except ConfigError:
            raise LossError(f"the project's λ rule has no measured feature/image ratio of {comparator[0]}:"
                            f"{comparator[1]} at {resolution} px (it has one for alexnet:pool5 at "
                            f"{', '.join(map(str, measured))} px): pass lambda_feat explicitly, or measure the ratio "
                            "(Comparator.feature_image_ratio) into repro.lambda_rule.FEATURE_IMAGE_RATIO_AT") from None
    return out


def minimum_side(network: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str,
                 dtype: torch.dtype = torch.float32, upto: int = 512) -> int | None:
    """The smallest square side `network` (images → features, e.g. a Comparator) runs on, by bisection on blank
    images (B = 1; the meta device works for shapes alone); None if not even `upto`."""
    def runs(side: int) -> bool:
        try:
            with torch.no_grad():
                network(torch.zeros(1, 3, side, side, device=device, dtype=dtype))
            return True
        except RuntimeError:
            return False

    if not runs(upto):
        return None
    low, high = 1, upto  # runs(high) is True
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle + 1, high)
    return high


class DeePSiMLoss(nn.Module):
    """The DeePSiM loss (Eq. 1; Eq. 8 for a VAE) as a module, for any generator in any training loop.

    Built from a frozen comparator C (a registry name + tap, or a `Comparator`), the λ in the paper's Caffe
    units and an optional discriminator D. It holds no optimiser and calls no backward: the caller keeps both
    optimisers and runs the two GAN phases, as the project's own loop (`repro.loop.Trainer`) does with this
    very class; `repro.balance.Balance` is the original rule for which of D and G to update. Inputs are images
    (B, 3, H, W) RGB float in [0, data_range] (default [0, 1]).

    Example, a generator `G` of R×R images trained in your own loop (one iteration: (1) update D, (2) update G,
    then the balancing rule picks the nets the next iteration updates)::

        from repro import Balance, DeePSiMLoss
        from repro.nets.discriminator import Discriminator

        R = 227
        D = Discriminator(resolution=R)
        loss = DeePSiMLoss("alexnet", "pool5", resolution=R, discriminator=D)  # λ: the project's rule at R px
        balance, step_d, step_g = Balance(), True, True
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
        fake = G(code)
        d_loss = loss.discriminator_loss(fake.detach(), real)             # (1) D on real and fake
        if step_d:
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        terms = loss(fake, real)              # {"feat": …, "adv": …, "img": …, "total": …}, D after its update
        if step_g:                                                        # (2) G
            opt_g.zero_grad()
            terms["total"].backward()
            opt_g.step()
        step_d, step_g, events = balance.update(d_loss.item() / terms["adv"].item())

    Args:
        comparator: registry name (`repro.comparators.NETS`) or a built `Comparator`; None only when λ_feat = 0.
        tap: the comparator's layer when `comparator` is a name ("pool5" = the paper's CONV5).
        resolution: side R of the images: the comparator is built for it (names only), and λ left as None come
            from the project's rule at R (`repro.lambda_rule.reduced_lambdas`; the paper's at 227). With such λ,
            images of another side are refused (they would get another side's balance of terms).
        weights: the comparator's weights file when the name needs one (caffenet, onnx, the fc taps of alexnet).
        lambda_feat, lambda_adv, lambda_img, lambda_kl: weights in the paper's Caffe units (`repro.losses`);
            None (the default of the first, second and fourth) = the rule's at `resolution`; λ_img is the
            paper's 2e-6 at every side. λ_kl counts only when `mu`/`logvar` are passed.
        discriminator: D(images, condition) → (B, 2) logits; required when λ_adv > 0.
        recon: "deepsim" (Eq. 1), or one image-space loss ("se", "l1", "ssim", "ms-ssim": autoencoder baselines).
        data_range: the images' range, as pytorch_msssim's: 1.0 for [0, 1], 255.0 for 0–255 floats (divided
            by it here). −1..1 images: pass (x + 1) / 2.
        check_range: check the targets' values against [0, data_range] on every call (one host sync on a GPU;
            the project's loop, whose images come from its own pipeline, turns it off).
    """

    def __init__(self, comparator: "str | nn.Module | None" = "alexnet", tap: str = "pool5", *, resolution: int = 227,
                 weights: str | None = None, lambda_feat: float | None = None, lambda_adv: float | None = None,
                 lambda_img: float = 2e-6, lambda_kl: float | None = None, discriminator: nn.Module | None = None,
                 recon: str = "deepsim", seed: int = 0, data_range: float = 1.0, check_range: bool = True):
        super().__init__()
        if recon != "deepsim" and recon not in RECONSTRUCTION_LOSSES:
            raise LossError(f"recon={recon!r}; choose from deepsim, {', '.join(RECONSTRUCTION_LOSSES)}")
        if not data_range > 0:
            raise LossError(f"data_range must be > 0 (1.0 for [0, 1] images, 255.0 for 0–255), got {data_range}")
        given = {"feat": lambda_feat, "adv": lambda_adv, "img": lambda_img, "kl": lambda_kl}
        self.from_rule = sorted(k for k, v in given.items() if v is None)  # λ the rule gives at `resolution`
        if self.from_rule:
            if isinstance(comparator, str):
                key = (_ALIASES.get(comparator, comparator), tap)
            else:
                key = (_ALIASES.get(getattr(comparator, "name", ""), getattr(comparator, "name", "")),
                       getattr(comparator, "tap", "")) if comparator is not None else None
            needs_feat = lambda_feat is None and recon == "deepsim" and comparator is not None
            rule = _rule_lambdas(resolution, key if needs_feat else None)
            given = {k: rule[f"lambda_{k}"] if v is None else v for k, v in given.items()}
        self.lambdas = {k: float(v) for k, v in given.items()}
        if any(v < 0 for v in self.lambdas.values()):
            raise LossError(f"every λ must be ≥ 0, got {self.lambdas}")
        self.recon, self.resolution = recon, resolution
        self.data_range, self.check_range = float(data_range), check_range
        lambda_feat, lambda_adv = self.lambdas["feat"], self.lambdas["adv"]
        deepsim = recon == "deepsim"
        if isinstance(comparator, str) and deepsim and lambda_feat > 0:
            comparator = build_comparator(comparator, tap, resolution, weights, seed=seed)
        elif isinstance(comparator, str):
            comparator = None  # no feature term: do not build (or load) a network that is never used
        if deepsim and lambda_feat > 0 and comparator is None:
            raise LossError("λ_feat > 0 needs a comparator (a registry name + tap, or a Comparator)")
        if deepsim and lambda_adv > 0 and discriminator is None:
            raise LossError("λ_adv > 0 needs a discriminator; pass discriminator=D or set lambda_adv=0")
        self.comparator = comparator if deepsim and lambda_feat > 0 else None
        self.discriminator = discriminator if deepsim and lambda_adv > 0 else None

    def _images(self, fake: torch.Tensor, real: torch.Tensor, kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the inputs (dtype, shape, the targets' range, the side the rule's λ are for) and bring them to
        [0, 1]: what a user's loop gets wrong most often fails here with a sentence, not a silent loss."""
        for name, images in (("fake", fake), ("real", real)):
            if not isinstance(images, torch.Tensor):
                raise LossError(f"{name} must be a tensor of images (B, 3, H, W), got {type(images).__name__}")
            if not images.is_floating_point():
                raise LossError(f"{name} images are {str(images.dtype).replace('torch.', '')}: DeePSiMLoss takes float "
                                f"images in [0, {self.data_range:g}]; convert with images.float() / 255 (0–255 bytes)")
            if images.dtype == torch.float64:
                raise LossError(f"{name} images are float64: the comparator and D run in float32; pass "
                                f"{name}.float()")
            if images.dim() != 4 or images.shape[1] != 3:
                raise LossError(f"{name} must be images (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        if fake.shape != real.shape:
            raise LossError(f"fake and real must have the same shape, got {tuple(fake.shape)} and {tuple(real.shape)}")
        if self.check_range:
            low, high = (float(v) for v in real.detach().aminmax())
            slack = 0.01 * self.data_range
            if low < -slack or high > self.data_range + slack:
                hint = ("pass data_range=255 for 0–255 images" if high > 2 * self.data_range else
                        "for −1..1 images pass (x + 1) / 2" if low < -slack else f"clamp them to [0, {self.data_range:g}]")
                raise LossError(f"real images range over [{low:.3g}, {high:.3g}], outside [0, {self.data_range:g}] "
                                f"(data_range={self.data_range:g}): {hint}")
        side = tuple(real.shape[-2:])
        rule_terms = [k for k in self.from_rule if self.lambdas[k] > 0 and (k != "kl" or kl) and k != "img"]  # λ_img: any side
        if rule_terms and side != (self.resolution, self.resolution):
            raise LossError(f"this DeePSiMLoss took λ_{', λ_'.join(rule_terms)} from the project's rule at "
                            f"{self.resolution} px, but the images are {side[0]}×{side[1]}: build it with "
                            f"resolution={side[-1]}, or give those λ explicitly")
        if self.data_range != 1.0:
            fake, real = fake / self.data_range, real / self.data_range
        return fake, real

    def _comparator(self, images: torch.Tensor) -> torch.Tensor:
        """C(images); an image too small for the comparator's pooling is a LossError naming the smallest side."""
        try:
            return self.comparator(images)
        except RuntimeError:
            smallest = minimum_side(self.comparator, images.device, images.dtype)
            if smallest is None or images.shape[-1] >= smallest and images.shape[-2] >= smallest:
                raise
            name = f"{getattr(self.comparator, 'name', '')}:{getattr(self.comparator, 'tap', '')}".strip(":")
            raise LossError(f"images of {images.shape[-2]}×{images.shape[-1]} px are too small for the comparator "
                            f"{name or type(self.comparator).__name__}: it needs at least {smallest}×{smallest}") from None

    def comparator_features(self, images: torch.Tensor) -> torch.Tensor | None:
        """C(x) of real images, without gradient (pass it back as `real_features` to compute it once)."""
        if self.comparator is None:
            return None
        with torch.no_grad():
            return self._comparator(images)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, real_features: torch.Tensor | None = None,
                condition: torch.Tensor | None = None, mu: torch.Tensor | None = None,
                logvar: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Generator terms by name ("feat", "adv", "img", "kl" or "recon") and their λ-weighted "total".

        fake: G's images (B, 3, H, W) [0, data_range], with gradient; real: the targets, same shape. real_features:
        C(real) when already known (e.g. the encoder is the comparator); condition: what D is conditioned on
        (the code y, when D sees features). D runs on `fake` labelled "real" (the non-saturating L_adv); its
        own weights get gradients here only if the caller left them requiring grad (the loop switches D's
        `requires_grad_` off for this phase).
        """
        fake, real = self._images(fake, real, kl=mu is not None)
        fake_features = logits_fake = None
        if self.comparator is not None:
            if real_features is None:
                real_features = self.comparator_features(real)
            fake_features = self._comparator(fake)
            real_features = real_features.reshape(fake_features.shape)  # a reused code may come flattened
            # λ_feat is in the reference comparator's balance of terms (repro.comparators, feature_scale)
            scale = getattr(self.comparator, "feature_scale", None)
            if scale is not None:
                fake_features, real_features = fake_features * scale, real_features * scale
        if self.discriminator is not None:
            logits_fake = self.discriminator(fake, condition)
        with _without_autocast(fake.device.type):
            return generator_terms(_fp32(fake), _fp32(real), self.lambdas, fake_features=_fp32(fake_features),
                                   real_features=_fp32(real_features), logits_fake=_fp32(logits_fake),
                                   mu=_fp32(mu), logvar=_fp32(logvar), recon=self.recon)

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor,
                           condition: torch.Tensor | None = None) -> torch.Tensor:
        """L_discr (Eq. 3) for the D phase: D on `real` (label real) and `fake` (label fake; pass fake.detach())."""
        if self.discriminator is None:
            raise LossError("this DeePSiMLoss has no discriminator (λ_adv = 0 or none given)")
        fake, real = self._images(fake, real)
        logits_real, logits_fake = self.discriminator(real, condition), self.discriminator(fake, condition)
        return discriminator_loss(_fp32(logits_real), _fp32(logits_fake))


def _without_autocast(device_type: str) -> AbstractContextManager:
    """The terms in fp32 under autocast too: it would run SSIM's Gaussian filters (convolutions) in bf16, where
    σ² = E[x²] − E[x]² cancels to negative values and MS-SSIM's powers turn them into NaN. (A device without
    autocast, e.g. meta, has nothing to switch off.)"""
    available = torch.amp.is_autocast_available(device_type)
    return torch.autocast(device_type, enabled=False) if available else nullcontext()


def _fp32(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Losses are computed in fp32 even under bf16/fp16 autocast (a no-op on fp32 tensors)."""
    return None if tensor is None else tensor.float()
