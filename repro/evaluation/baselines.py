"""Baselines of Table 2 that are not a preset of the one loop: Mahendran & Vedaldi's optimisation.

Mahendran & Vedaldi (CVPR 2015, "Understanding deep image representations by inverting them"; the
paper's Eq. 6 and row "M & V [21]") find, for each image separately, an image x̃ whose features match:

    E(x̃) = ‖Φ(x̃) − Φ₀‖² / ‖Φ₀‖²  +  (λ_V/2 · V^β(x̃) + λ_α/2 · ‖x̃‖_α^α) / σ²

What we follow, from the paper and its released code (aravindhm/deep-goggle, `core/invert_nn.m`,
`experiments/experiment_cnn.m`):
- the feature term normalised by ‖Φ₀‖² per image (their `y0_sigma`);
- the image x̃ in Caffe units (0–255, mean-subtracted), where their λ values are defined;
- the TV^β prior V^β(x) = Σ_{c,i,j} ((x_{i,j+1} − x_{ij})² + (x_{i+1,j} − x_{ij})²)^{β/2} with β = 2 and
  λ_V = 1 / 10 / 100 for conv1–2 / pool2–conv4 / conv5–fc8 (their per-layer choice), and the α-norm bound
  with α = 6, λ_α = 8·10⁻¹⁰;
- both priors divided by σ² = (mean Euclidean norm of a natural image)² (their `x0_sigma`), which we
  express per pixel (`image_rms`) so that it scales with the resolution;
- the start from Gaussian noise of that norm, and their step schedule shape (rate ×1 for the first quarter
  of the steps, ×0.1 for the next half, ×0.01 for the last quarter, momentum reset at each change);
- their optimiser: gradient descent with momentum 0.9 at rate 0.004 on σ²·E (which is what their update
  computes), so the rate means what it meant for them; it converges on the torchvision-layout AlexNet too.

What differs: we run a configurable number of steps (they ran 400) and batch the images (each image's
objective is independent: the batch objective is their sum); `optimizer="adam"` or `"lbfgs"` are offered
for other networks; no jitter (that came with their 2016 IJCV follow-up).

The other baseline of Table 2, "D & B [26]" / "Our image loss" (a generator trained with the image loss
only), needs no code here: it is the `small-pool5-image` / `cpu-pool5-image` preset of `repro.loop`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from repro.errors import DeepsimError
from repro.nets.caffenet import ILSVRC_MEAN_BGR

# M&V's λ_V per layer of CaffeNet (experiment_cnn.m: layers 1–6 → 1, 7–12 → 10, 13–20 → 100).
LAMBDA_TV_BY_TAP = {
    "conv1": 1.0, "pool1": 1.0, "norm1": 1.0, "conv2": 1.0,
    "pool2": 10.0, "norm2": 10.0, "conv3": 10.0, "conv4": 10.0,
    "conv5": 100.0, "pool5": 100.0, "fc6": 100.0, "fc7": 100.0, "fc8": 100.0,
}
OPTIMIZERS = ("adam", "sgd", "lbfgs")
# Per-channel ILSVRC mean as pipeline RGB in [0, 1]: x̃ is optimised in Caffe units around it.
MEAN_RGB = tuple(c / 255.0 for c in reversed(ILSVRC_MEAN_BGR))


@dataclass(frozen=True)
class MVConfig:
    steps: int = 200                 # optimisation steps per batch (M&V ran 400)
    optimizer: str = "sgd"           # sgd (M&V's momentum gradient descent) | adam | lbfgs
    lr: float = 0.004                # sgd: M&V's rate; adam: step in Caffe units (0–255), e.g. 30; lbfgs: 1
    momentum: float = 0.9            # sgd only (M&V's value)
    beta: float = 2.0                # power of the TV^β prior (M&V: 2 for CNNs, against spikes)
    lambda_tv: float = 100.0         # λ_V; M&V's value for conv5–fc8 (see LAMBDA_TV_BY_TAP)
    alpha: float = 6.0               # α-norm bound keeping pixels in range
    lambda_alpha: float = 8e-10      # λ_α (M&V's value)
    image_rms: float = 66.6          # per-pixel RMS of mean-subtracted images, Caffe units: σ² = rms²·3HW
                                     # (measured on imagenet-1k-256 at 227 px; M&V measured x0_sigma alike)
    init: str = "noise"              # noise (M&V: Gaussian of norm σ) | grey (the mean image)
    batch_size: int = 32             # images optimised together
    seed: int = 0
    max_backoffs: int = 8            # our guard: step-backs (rate halved) an image may take before MVDiverged
    blowup: float = 10.0             # ... taken when its objective is not finite or over blowup × its start

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"MVConfig.optimizer={self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.init not in ("noise", "grey"):
            raise ValueError(f"MVConfig.init={self.init!r}; choose noise or grey")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("MVConfig.steps and batch_size must be ≥ 1")


def config_for_layer(tap: str, **overrides) -> MVConfig:
    """M&V's settings for inverting `tap` (their per-layer λ_V), with any field overridden."""
    return MVConfig(**{"lambda_tv": LAMBDA_TV_BY_TAP.get(tap, 100.0), **overrides})


def tv_beta(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """M&V's V^β prior per image: (B, C, H, W) → (B,).

    Forward differences with the last row/column repeated (their `x(:, [2:end end])`), so the border adds
    nothing; β = 2 is smooth, β = 1 is the classical (isotropic) total variation.
    """
    dx = torch.cat([x[..., :, 1:], x[..., :, -1:]], dim=-1) - x
    dy = torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2) - x
    squared = dx.square() + dy.square()
    if beta == 2.0:
        return squared.flatten(1).sum(1)
    return squared.clamp_min(1e-10).pow(beta / 2).flatten(1).sum(1)  # clamp: finite gradient at 0 for β < 2


def alpha_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """‖x‖_α^α per image: (B, C, H, W) → (B,). Penalises pixels far outside the natural range."""
    return x.abs().pow(alpha).flatten(1).sum(1)


def to_caffe_units(images: torch.Tensor) -> torch.Tensor:
    """Pipeline images RGB [0, 1] → 0–255 minus the ILSVRC mean (RGB order; the priors ignore order)."""
    mean = images.new_tensor(MEAN_RGB).view(1, 3, 1, 1)
    return (images - mean) * 255.0


def from_caffe_units(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(MEAN_RGB).view(1, 3, 1, 1)
    return x / 255.0 + mean


@dataclass
class MVObjective:
    """Eq. 6 with M&V's normalisation; `__call__(x)` returns every term per image (B,), Caffe units."""

    net: Callable[[torch.Tensor], torch.Tensor]  # frozen, pipeline images → features
    target: torch.Tensor                         # Φ₀ (B, ...)
    config: MVConfig

    def __post_init__(self) -> None:
        self.target_norm2 = self.target.flatten(1).square().sum(1).clamp_min(1e-12)

    def sigma2(self, x: torch.Tensor) -> float:
        """σ², the squared norm of a typical natural image of x's size (M&V's `x0_sigma`²)."""
        return self.config.image_rms ** 2 * x[0].numel()

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        sigma2 = self.sigma2(x)
        features = self.net(from_caffe_units(x))
        feature = (features - self.target).flatten(1).square().sum(1) / self.target_norm2
        tv = cfg.lambda_tv / 2 * tv_beta(x, cfg.beta) / sigma2
        bound = cfg.lambda_alpha / 2 * alpha_norm(x, cfg.alpha) / sigma2
        return {"feature": feature, "tv": tv, "bound": bound, "total": feature + tv + bound}


class MVDiverged(DeepsimError, FloatingPointError):
    """The optimisation left the finite numbers: said at the step it happens, not as NaN metrics afterwards."""


@dataclass
class MVResult:
    images: torch.Tensor                                 # (B, 3, H, W) pipeline RGB, not clamped
    history: list[dict[str, float]] = field(default_factory=list)  # mean of each term per step
    backoffs: list[dict[str, int]] = field(default_factory=list)  # the guard's step-backs: image index, step


def rate_factor(step: int, steps: int) -> float:
    """M&V's schedule shape: ×1 for the first quarter, ×0.1 for the next half, ×0.01 for the rest."""
    if step < steps // 4:
        return 1.0
    return 0.1 if step < (3 * steps) // 4 else 0.01


def _start(shape: tuple[int, ...], config: MVConfig, device: torch.device) -> torch.Tensor:
    if config.init == "grey":
        return torch.zeros(shape, device=device)
    gen = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(shape, generator=gen)
    sigma = config.image_rms * (noise[0].numel() ** 0.5)
    return (noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * sigma).to(device)


def _optimizer(x: torch.Tensor, config: MVConfig, factor: float) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam([x], lr=config.lr * factor)
    if config.optimizer == "sgd":
        return torch.optim.SGD([x], lr=config.lr * factor, momentum=config.momentum)
    return torch.optim.LBFGS([x], lr=config.lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe")


def invert_features(net: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, shape: tuple[int, int],
                    config: MVConfig = MVConfig(), progress: bool = False) -> MVResult:
    """Optimise one batch of images so that `net(images)` matches `target` (B, ...).

    Args:
        net: frozen network taking pipeline images (B, 3, H, W) RGB [0, 1], e.g. a `Comparator`.
        target: Φ₀, the features to invert, (B, ...) on the device of `net`.
        shape: (H, W) of the images to produce.
    Returns:
        MVResult with the images (pipeline RGB, unclamped) and the mean of each term per step.
    """
    objective = MVObjective(net, target.detach(), config)
    x = _start((target.shape[0], 3, *shape), config, target.device).requires_grad_(True)
    factor = rate_factor(0, config.steps)
    optimizer = _optimizer(x, config, factor)
    history: list[dict[str, float]] = []
    # Our guard, not M&V's: an image whose objective leaves the finite numbers or grows past `blowup` × its value
    # at the start goes back to its best point so far, its momentum dropped and its own rate halved (a weight on
    # its term), up to `max_backoffs` times; the others go on untouched. An optimisation that never blows up is
    # exactly M&V's.
    weight = torch.ones(target.shape[0], device=target.device)
    backoffs: list[dict[str, int]] = []
    start_total: torch.Tensor | None = None
    best_total = torch.full_like(weight, float("inf"))
    best = x.detach().clone()
    for step in tqdm(range(config.steps), desc="M&V", unit="step", disable=not progress, leave=False):
        new_factor = rate_factor(step, config.steps)
        if new_factor != factor and config.optimizer != "lbfgs":
            factor = new_factor  # new rate: fresh momentum, as M&V reset theirs
            optimizer = _optimizer(x, config, factor)
        current = x.detach().clone()  # the point whose terms come next
        terms: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            terms.update(objective(x))
            # M&V step on σ²·E (their update scales the feature gradient by x0_sigma²/y0_sigma²), so their
            # SGD rate means the same here; Adam does not care about the scale.
            total = (terms["total"] * weight).sum() * objective.sigma2(x)
            total.backward()
            return total

        optimizer.step(closure)
        total = terms["total"].detach()
        start_total = total.clone() if start_total is None else start_total
        bad = torch.stack([~torch.isfinite(v.detach()) for v in terms.values()]).any(0) | (
            total > config.blowup * start_total)
        with torch.no_grad():
            better = ~bad & (total < best_total)
            best_total[better], best[better] = total[better], current[better]
        if bad.any():
            diverged = bad.nonzero().flatten().tolist()
            if (weight[bad] <= 0.5 ** config.max_backoffs).any():  # an image already halved max_backoffs times
                raise MVDiverged(f"M&V diverged at step {step + 1} of {config.steps}: the objective of image(s) "
                                 f"{diverged} of this batch of {target.shape[0]} is not finite or over "
                                 f"{config.blowup:g}× its start after {config.max_backoffs} halvings of its rate "
                                 f"(optimizer {config.optimizer}, rate {config.lr * factor:g}); try fewer steps, a "
                                 f"lower rate or optimizer='adam'")
            with torch.no_grad():
                x[bad] = best[bad]
                weight[bad] *= 0.5
                for state in optimizer.state.get(x, {}).values():
                    if torch.is_tensor(state) and state.shape == x.shape:
                        state[bad] = 0
            backoffs += [{"image": i, "step": step + 1} for i in diverged]
        good = ~bad
        history.append({k: float(v.detach()[good].mean()) if good.any() else float("nan") for k, v in terms.items()})
    with torch.no_grad():
        final = objective(x)
    history.append({k: float(v.mean()) for k, v in final.items()})
    return MVResult(from_caffe_units(x.detach()), history, backoffs)


def invert_images(net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                  config: MVConfig = MVConfig(), progress: bool = True) -> MVResult:
    """M&V reconstructions of `images` (N, 3, H, W) from `net`'s features, `config.batch_size` at a time."""
    parts, histories, backoffs = [], [], []
    starts = range(0, images.shape[0], config.batch_size)
    for start in tqdm(starts, desc="M&V batches", unit="batch", disable=not progress):
        batch = images[start : start + config.batch_size]
        with torch.no_grad():
            target = net(batch)
        result = invert_features(net, target, tuple(images.shape[-2:]), config, progress=progress)
        parts.append(result.images)
        histories.append(result.history)
        backoffs += [{**b, "image": start + b["image"]} for b in result.backoffs]  # index in `images`
    # History of the whole set: per step, the image-weighted mean over batches.
    sizes = [p.shape[0] for p in parts]
    merged = [{k: sum(h[i][k] * n for h, n in zip(histories, sizes)) / sum(sizes) for k in histories[0][i]}
              for i in range(len(histories[0]))]
    return MVResult(torch.cat(parts), merged, backoffs)
