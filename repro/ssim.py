"""SSIM and MS-SSIM, differentiable, for use as training losses (Ridgeway/Snell et al. 2015) and as metrics.

Written here rather than delegated to `pytorch_msssim` because three things must be ours: the scale
fallback for small images, a gradient that stays finite for anti-correlated images, and a choice for odd
image sides. `tests/test_ssim.py` compares the values with `pytorch_msssim` (an independent
implementation) to 1e-4 where both are defined.

Definition (Wang, Simoncelli & Bovik 2003), per channel, with a Gaussian window (`win_size`, `sigma`) applied
separably with "valid" filtering (no padding), C1 = (k1·L)², C2 = (k2·L)², L = `data_range`:

    l  = (2 μx μy + C1) / (μx² + μy² + C1)                  luminance
    cs = (2 σxy + C2) / (σx² + σy² + C2)                    contrast · structure
    SSIM = mean over pixels of l·cs;   CS = mean over pixels of cs

MS-SSIM over M scales (scale 1 = full resolution, each next one 2×2-average-pooled):

    MS-SSIM = Π_{j<M} relu(CS_j)^{w_j} · relu(SSIM_M)^{w_M}        per channel, then mean over channels

Choices, each a decision stated once:
- **Negative terms.** CS and SSIM lie in [-1, 1]; anti-correlated images (y = 1 − x) make them negative and a
  negative number to a fractional power is NaN. As `pytorch_msssim` does, the factors are clamped at 0
  (relu), so such images score 0. Unlike a plain `relu(c) ** w`, whose backward pass computes w·0^(w−1) = inf
  and relies on masking to hide it, the power is taken of `max(c, 1e-12)` and the result selected where
  c > 0: values are those of relu(c)^w (to below 1e-12 in c), gradients finite everywhere. The gradient of
  a clamped factor is 0: once some scale is anti-correlated, MS-SSIM is flat there, which the caller should
  know when using it as a loss from a bad initialisation.
- **Small images.** The standard 5 scales need the coarsest scale at least `win_size` pixels on a side, i.e.
  a side > (win_size − 1)·2⁴ = 160 px for win_size 11 (pytorch_msssim asserts this). Our images are
  64–227 px. With `scales=None` we use as many scales as fit (64 px → 3, 96/128 px → 4, ≥ 161 px → 5),
  taking the finest ones' weights renormalised to sum to 1 (so a constant CS level c still scores c). When
  all weights are used they are taken as given (the published ones sum to 1.0001). An explicit `scales=`
  that does not fit, or an image smaller than one window, raises `ValueError` with the shapes.
- **Odd sides.** Downsampling is a 2×2 average that, on an odd side, averages the last row/column alone
  (`ceil_mode`, padding excluded from the count) — equivalent to replicating the edge, as the reference
  Matlab code's symmetric boundary does. `pytorch_msssim` zero-pads instead, which darkens the edge;
  the two agree exactly wherever every side is even (e.g. 256 → 128 → 64 → 32 → 16).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003, finest first
_POW_FLOOR = 1e-12  # the power's input floor: keeps w·c^(w−1) finite (see module docstring)


def gaussian_window(win_size: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """1-D Gaussian of `win_size` taps centred on the middle one, summing to 1: (win_size,)."""
    coords = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return (window / window.sum()).to(dtype=dtype, device=device)


def _check_pair(x: Tensor, y: Tensor, win_size: int, what: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{what}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"{what}: expected images (B, C, H, W), got shape {tuple(x.shape)}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"{what}: win_size must be a positive odd number, got {win_size}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(
            f"{what}: images of shape {tuple(x.shape)} are smaller than one {win_size}×{win_size} window "
            f"(valid filtering needs H, W ≥ win_size); use larger images or a smaller win_size"
        )


def _blur(images: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian, valid filtering, each channel alone: (B, C, H, W) → (B, C, H−w+1, W−w+1)."""
    channels = images.shape[1]
    size = window.numel()
    out = F.conv2d(images, window.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)
    return F.conv2d(out, window.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)


def ssim_components(x: Tensor, y: Tensor, window: Tensor, data_range: float, k1: float, k2: float
                    ) -> tuple[Tensor, Tensor]:
    """SSIM and CS per image and channel at one scale.

    Args:
        x, y: (B, C, H, W), H and W ≥ len(window).
        window: (win_size,) 1-D Gaussian.
    Returns:
        (ssim, cs), each (B, C): pixel means of l·cs and of cs over the valid area.
    """
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    channels = x.shape[1]
    # One grouped convolution for the five local moments.
    moments = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov = xx - mu_xx, yy - mu_yy, xy - mu_xy
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> Tensor:
    """Single-scale SSIM, signed (in [-1, 1]; 1 for identical images).

    Args:
        x, y: (B, C, H, W) images in [0, data_range], H and W ≥ win_size.
        data_range: L in C1 = (k1·L)², C2 = (k2·L)²; 1.0 for pipeline images.
        win_size, sigma: the Gaussian window (11, 1.5 as in Wang et al.).
        reduction: "mean" → scalar over the batch; "none" → (B,).
    Returns:
        () or (B,): SSIM averaged over pixels and channels.
    Raises:
        ValueError: shapes differ, are not 4-D, or are smaller than one window.
    """
    _check_pair(x, y, win_size, "ssim")
    window = gaussian_window(win_size, sigma, x.dtype, x.device)
    per_channel, _ = ssim_components(x, y, window, data_range, k1, k2)
    return _reduce(per_channel.mean(1), reduction)


def downsample(images: Tensor) -> Tensor:
    """2×2 average pooling; an odd last row/column is averaged alone (= edge replication). (B,C,H,W) →
    (B, C, ⌈H/2⌉, ⌈W/2⌉)."""
    return F.avg_pool2d(images, kernel_size=2, ceil_mode=True, count_include_pad=False)


def ms_ssim_scales(height: int, width: int, win_size: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many scales (≤ max_scales) keep every side ≥ win_size; 0 if not even the first does.

    With ⌈·/2⌉ halving, 5 scales fit exactly when min(H, W) > (win_size − 1)·2⁴ (161 px for win_size 11).
    """
    scales, h, w = 0, height, width
    while scales < max_scales and min(h, w) >= win_size:
        scales += 1
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return scales


def _nonnegative_pow(factor: Tensor, exponent: float) -> Tensor:
    """relu(factor) ** exponent with a finite gradient everywhere (0 where factor ≤ 0)."""
    safe = factor.clamp(min=_POW_FLOOR)
    return torch.where(factor > 0, safe**exponent, torch.zeros_like(factor))


def ms_ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
            weights: Sequence[float] = MS_SSIM_WEIGHTS, k1: float = 0.01, k2: float = 0.03,
            scales: int | None = None, reduction: str = "mean") -> Tensor:
    """Multi-scale SSIM in [0, 1] (1 for identical images), with the small-image fallback.

    Args:
        x, y: (B, C, H, W) images in [0, data_range].
        data_range, win_size, sigma, k1, k2: as in `ssim`.
        weights: per-scale exponents, finest first (the standard five by default).
        scales: number of scales to use, 1 ≤ scales ≤ len(weights). None: as many as fit, i.e. the most
            that keep the coarsest scale ≥ win_size on every side (`ms_ssim_scales`), at most len(weights).
            When fewer than len(weights) scales are used, the first `scales` weights are renormalised to
            sum to 1; luminance enters at the coarsest scale used.
        reduction: "mean" → scalar over the batch; "none" → (B,).
    Returns:
        () or (B,): MS-SSIM per image (product over scales per channel, then mean over channels).
    Raises:
        ValueError: shapes differ or are not 4-D; the image is smaller than one window; `scales` is out of
            range or does not fit the image.
    """
    _check_pair(x, y, win_size, "ms_ssim")
    height, width = x.shape[-2:]
    fit = ms_ssim_scales(height, width, win_size, len(weights))
    if scales is None:
        scales = fit
    elif not 1 <= scales <= len(weights):
        raise ValueError(f"ms_ssim: scales must be in 1..{len(weights)} (one weight each), got {scales}")
    elif scales > fit:
        raise ValueError(
            f"ms_ssim: {scales} scales need the coarsest scale ≥ {win_size} px on a side, i.e. images larger "
            f"than {(win_size - 1) * 2 ** (scales - 1)} px; images of shape {tuple(x.shape)} fit {fit}: "
            f"pass scales=None to use as many as fit"
        )
    used = [float(w) for w in weights[:scales]]
    if scales < len(weights):
        total = sum(used)
        used = [w / total for w in used]

    window = gaussian_window(win_size, sigma, x.dtype, x.device)
    score = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for level, weight in enumerate(used):
        ssim_value, cs = ssim_components(x, y, window, data_range, k1, k2)
        if level == scales - 1:
            score = score * _nonnegative_pow(ssim_value, weight)
        else:
            score = score * _nonnegative_pow(cs, weight)
            x, y = downsample(x), downsample(y)
    return _reduce(score.mean(1), reduction)


class SSIMLoss(nn.Module):
    """1 − SSIM, averaged over the batch: 0 for identical images, up to 2 for anti-correlated ones."""

    def __init__(self, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
                 k1: float = 0.01, k2: float = 0.03) -> None:
        super().__init__()
        self.data_range, self.win_size, self.sigma, self.k1, self.k2 = data_range, win_size, sigma, k1, k2

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        """fake, real: (B, C, H, W) in [0, data_range] → scalar loss."""
        return 1.0 - ssim(fake, real, self.data_range, self.win_size, self.sigma, self.k1, self.k2)


class MSSSIMLoss(nn.Module):
    """1 − MS-SSIM, averaged over the batch, in [0, 1]; scales follow `ms_ssim` (fallback for small images)."""

    def __init__(self, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
                 weights: Sequence[float] = MS_SSIM_WEIGHTS, k1: float = 0.01, k2: float = 0.03,
                 scales: int | None = None) -> None:
        super().__init__()
        self.data_range, self.win_size, self.sigma, self.k1, self.k2 = data_range, win_size, sigma, k1, k2
        self.weights, self.scales = tuple(weights), scales

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        """fake, real: (B, C, H, W) in [0, data_range] → scalar loss."""
        return 1.0 - ms_ssim(fake, real, self.data_range, self.win_size, self.sigma, self.weights,
                             self.k1, self.k2, self.scales)
