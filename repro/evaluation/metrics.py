"""Evaluation metrics: the paper's normalised Euclidean error, PSNR, SSIM, MS-SSIM, LPIPS, gradient error, and
`METRICS`, the one registry of every reported number's title, format and better side (by name).

The normalised error is written out here because the paper defines it exactly (§4.1, Table 2):

    error = mean_i ‖a_i − b_i‖₂ / N,    N = mean over pairs j ≠ k of ‖a_j − a_k‖₂

for targets a_i and reconstructions b_i (flattened), N taken over the test targets. An error of 1 (100 %)
is what a random other test image scores. It works in image space (pass images) and in feature space (pass
the encoder's features of the reconstructions and of the originals at the inverted layer). Units cancel:
the paper measured images in Caffe units (BGR, 0–255, mean subtracted); a channel permutation and a
constant offset leave every difference's norm unchanged, and the ×255 scale multiplies numerator and N
alike, so the ratio computed on our [0, 1] RGB pipeline images is the same number.

`gradient_error` (how far a reconstruction's edges are from its original's; blur scores below a flat image,
noise and textures above) and `gradient_energy` (contrast) describe edges; the "pixel losses blur" claim reads
the fine-scale power off G's lattice (`repro.evaluation.spectra`), for the reason `gradient_error` gives.

SSIM and MS-SSIM come from `repro.ssim` (small-image scale fallback documented there); LPIPS from the `lpips`
package with the AlexNet backbone given explicitly (our offline torchvision-layout weights).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from repro.ssim import ms_ssim, ssim

DEFAULT_CHUNK_BYTES = 64 << 20  # per float64 block of rows in the pairwise distances


# ---------------------------------------------------------------------------------------------------
# The paper's normalised Euclidean error
# ---------------------------------------------------------------------------------------------------
def _rows_per_chunk(dim: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // (8 * dim))


def pairwise_mean_distance(samples: Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> float:
    """N: the mean Euclidean distance over all pairs of different samples, Σ_{j≠k} ‖a_j − a_k‖ / (n(n−1)).

    Computed block by block in float64 (each block of rows ≤ `chunk_bytes`), so 1000 × 3·227·227 images
    need about three blocks' memory beyond the input, and the upper triangle only (pairs j < k, doubled).

    Args:
        samples: (n, ...) with n ≥ 2; everything after the first dimension is flattened.
        chunk_bytes: memory budget of one float64 block of rows.
    Returns:
        N as a Python float.
    """
    if samples.dim() < 2 or samples.shape[0] < 2:
        raise ValueError(f"pairwise_mean_distance needs (n, ...) with n ≥ 2 samples, got shape {tuple(samples.shape)}")
    flat = samples.reshape(samples.shape[0], -1)
    n = flat.shape[0]
    rows = _rows_per_chunk(flat.shape[1], chunk_bytes)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for i in range(0, n, rows):
        block_i = flat[i : i + rows].double()
        for j in range(i, n, rows):
            if j == i:  # within a block: strict upper triangle, so the diagonal (zeros) never counts
                total += torch.cdist(block_i, block_i).triu(1).sum()
            else:
                total += torch.cdist(block_i, flat[j : j + rows].double()).sum()
    return float(2 * total / (n * (n - 1)))


def normalised_error(reconstructions: Tensor, targets: Tensor, normaliser: float | Tensor | None = None,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> float:
    """The paper's error mean_i ‖a_i − b_i‖₂ / N, as a fraction (× 100 for Table 2's %).

    Args:
        reconstructions: (n, ...) b_i: images, or features of the reconstructed images.
        targets: (n, ...) a_i: the originals (or their features), same shape.
        normaliser: N; None computes it from `targets` (`pairwise_mean_distance`). Pass it when scoring
            several methods on the same test set, so all share one N.
    Returns:
        The error as a Python float (0 for identical inputs, ≈ 1 for a random other test image).
    """
    if reconstructions.shape != targets.shape:
        raise ValueError(f"normalised_error: reconstructions {tuple(reconstructions.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape (one reconstruction per target)")
    if targets.dim() < 1 or targets.shape[0] < 1:
        raise ValueError(f"normalised_error needs at least one sample, got shape {tuple(targets.shape)}")
    if normaliser is None:
        normaliser = pairwise_mean_distance(targets, chunk_bytes)
    normaliser = float(normaliser)
    if not normaliser > 0:
        raise ValueError(f"normalised_error: the normaliser N must be > 0, got {normaliser} "
                         "(are all targets identical?)")
    n = targets.shape[0]
    flat_b, flat_a = reconstructions.reshape(n, -1), targets.reshape(n, -1)
    rows = _rows_per_chunk(flat_a.shape[1], chunk_bytes)
    total = torch.zeros((), dtype=torch.float64, device=flat_a.device)
    for i in range(0, n, rows):
        total += (flat_a[i : i + rows].double() - flat_b[i : i + rows].double()).norm(dim=1).sum()
    return float(total / n) / normaliser


# ---------------------------------------------------------------------------------------------------
# Image-quality metrics
# ---------------------------------------------------------------------------------------------------
def psnr(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, per image, then averaged (not the PSNR of the pooled MSE).

    Args:
        x, y: (B, ...) images in [0, data_range], same shape.
        reduction: "mean" → scalar; "none" → (B,).
    Returns:
        10·log10(data_range² / MSE_i), float64; +inf for an image identical to its target.
    """
    if x.shape != y.shape or x.dim() < 2:
        raise ValueError(f"psnr: x and y must be (B, ...) of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    per_image = 10 * torch.log10(data_range**2 / mse)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def image_gradients(images: Tensor) -> Tensor:
    """The horizontal and vertical finite differences of each image, flattened: (B, C·H·(W−1) + C·(H−1)·W) float64."""
    if images.dim() != 4:
        raise ValueError(f"image_gradients: expected (B, C, H, W) images, got {tuple(images.shape)}")
    x = images.double()
    return torch.cat([(x[..., :, 1:] - x[..., :, :-1]).flatten(1), (x[..., 1:, :] - x[..., :-1, :]).flatten(1)], 1)


def gradient_energy(images: Tensor) -> Tensor:
    """Mean absolute horizontal and vertical finite difference per image, (B,) float64.

    How much local contrast an image has, whatever its origin: noise and checkerboard textures count as much
    as the original's edges, so it can say *that* an image is smooth but not that it is sharp. `scores.score`
    reports it (`sharpness_pct`, over the originals') as a description. Our addition; neither paper defines it.
    """
    if images.dim() != 4:
        raise ValueError(f"gradient_energy: expected (B, C, H, W) images, got {tuple(images.shape)}")
    x = images.double()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def gradient_error(reconstructions: Tensor, originals: Tensor) -> Tensor:
    """How far a reconstruction's edges are from its original's: ‖∇b − ∇a‖₂ / ‖∇a‖₂ per image, (B,) float64.

    ∇ is the field of horizontal and vertical finite differences of every channel (`image_gradients`). 0 =
    the original's structure exactly; 1 (100 %) = no structure at all (a flat image: all of the original's
    edges missing); above 1 = structure the original does not have. Blur lowers ∇b where the original has
    edges and so scores between 0 and 1; noise or a texture adds gradients the original lacks, which count
    against it, however much "contrast" they add. On real images, at equal pixel error (RMS), the original
    plus white noise or a 2-px checkerboard scores worse than the original blurred (tests/test_evaluate.py),
    where `gradient_energy` ranks both "sharper". Our addition; neither paper defines a number for it.

    Why it cannot judge the blur claim: it is an L2 distance after a linear map, so the conditional mean of
    the images given the code (what the image loss learns) minimises it. A generator that draws the fine
    details the code leaves open, even from exactly the right distribution, scores √2 times the mean's residual
    (two independent draws differ by twice the variance); at an image loss of ~100 % that is ~141 %, however
    sharp and natural its images (tests/test_spectra.py shows it on real images). The claim reads
    `repro.evaluation.spectra`'s fine-scale power instead; this number stays a description of edge agreement.

    Args:
        reconstructions, originals: (B, C, H, W), same shape; originals must not be flat.
    """
    if reconstructions.shape != originals.shape:
        raise ValueError(f"gradient_error: reconstructions {tuple(reconstructions.shape)} and originals "
                         f"{tuple(originals.shape)} must have the same shape")
    reference = image_gradients(originals)
    norm = reference.norm(dim=1)
    if not bool((norm > 0).all()):
        raise ValueError("gradient_error: an original is flat (no gradients), so no structure can be matched")
    return (image_gradients(reconstructions) - reference).norm(dim=1) / norm


# Backbone (torchvision `features.<i>`) → lpips's AlexNet slices, which keep torchvision's indices.
LPIPS_BACKBONE_TABLE = {
    "features.0": "slice1.0", "features.3": "slice2.3", "features.6": "slice3.6",
    "features.8": "slice4.8", "features.10": "slice5.10",
}
LPIPS_HEADS = 5  # one 1×1 linear head per AlexNet ReLU tap (conv1..conv5)


def lpips_package_heads() -> dict[str, Tensor]:
    """The LPIPS v0.1 AlexNet linear heads shipped inside the `lpips` package (no download)."""
    import lpips

    path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth")
    return torch.load(path, map_location="cpu", weights_only=True)


class LPIPSMetric(nn.Module):
    """LPIPS (Zhang et al. 2018, v0.1, AlexNet) with an explicitly given, frozen backbone.

    `lpips.LPIPS(pnet_rand=True)` builds the network without torchvision fetching its weights; we then load
    the backbone from `backbone_state` (torchvision layout: `features.{0,3,6,8,10}.{weight,bias}`, e.g.
    `repro.weights.alexnet_tv_state_dict()`) and the linear heads from `heads_state` (default: the file
    shipped in the `lpips` package), each through an explicit table with `strict=True` — the package's
    own loader uses `strict=False`, which would hide a mismatch. Heads are built without dropout, so the
    metric is deterministic whatever `.train()` says.

    Args (forward):
        x, y: (B, 3, H, W) RGB in [0, 1] (pipeline images; rescaled to LPIPS's [-1, 1] inside), H, W ≥ 32.
    Returns:
        (B,) distances ≥ 0; 0 for identical images.
    """

    def __init__(self, backbone_state: Mapping[str, Tensor], heads_state: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.filterwarnings("ignore", message=".*pretrained.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*Arguments other than a weight enum.*", category=UserWarning)
            self.model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, use_dropout=False, verbose=False)
        self.model.net.load_state_dict(self._map_backbone(backbone_state), strict=True)
        heads = dict(lpips_package_heads() if heads_state is None else heads_state)
        expected = {f"lin{k}.model.1.weight" for k in range(LPIPS_HEADS)}
        if set(heads) != expected:
            raise ValueError(f"LPIPS heads: expected keys {sorted(expected)}, got {sorted(heads)}")
        for k in range(LPIPS_HEADS):  # the package's files name the conv `model.1` (after a dropout)
            self.model.lins[k].load_state_dict({"model.0.weight": heads[f"lin{k}.model.1.weight"]}, strict=True)
        self.model.requires_grad_(False)
        self.model.eval()

    @staticmethod
    def _map_backbone(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        expected = {f"{src}.{p}" for src in LPIPS_BACKBONE_TABLE for p in ("weight", "bias")}
        if set(state) != expected:
            raise ValueError(f"LPIPS backbone: expected torchvision AlexNet keys {sorted(expected)}; "
                             f"missing {sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}")
        return {f"{LPIPS_BACKBONE_TABLE[src]}.{p}": state[f"{src}.{p}"]
                for src in LPIPS_BACKBONE_TABLE for p in ("weight", "bias")}

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS: expected two (B, 3, H, W) batches of the same shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        return self.model(x, y, normalize=True).flatten()


# ---------------------------------------------------------------------------------------------------
# Registry: every number a table shows, by its key in metrics.json and in Tune's reports
# ---------------------------------------------------------------------------------------------------
PerImage = Callable[..., Tensor]  # (recon, target, *, data_range, lpips) → (B,) per-image values


def _psnr(recon: Tensor, target: Tensor, *, data_range: float, lpips: LPIPSMetric | None) -> Tensor:
    return psnr(recon, target, data_range, reduction="none")


def _ssim(recon: Tensor, target: Tensor, *, data_range: float, lpips: LPIPSMetric | None) -> Tensor:
    return ssim(recon, target, data_range, reduction="none")


def _ms_ssim(recon: Tensor, target: Tensor, *, data_range: float, lpips: LPIPSMetric | None) -> Tensor:
    return ms_ssim(recon, target, data_range, reduction="none")


def _lpips(recon: Tensor, target: Tensor, *, data_range: float, lpips: LPIPSMetric | None) -> Tensor:
    if lpips is None:
        raise ValueError("metric 'lpips' needs an LPIPSMetric: pass lpips=LPIPSMetric(alexnet_tv_state_dict())")
    return lpips(recon / data_range, target / data_range)


MISSING = "–"  # a cell with no value (not measured, or not printed in the paper)


@dataclass(frozen=True)
class Metric:
    """One reported number and how every table shows it (`repro.evaluation.tables`)."""

    key: str                           # its key in metrics.json, compare_autoencoders' record and Tune's reports
    title: str                         # column title
    fmt: str                           # str.format pattern of a cell
    better: str | None                 # "lower" or "higher"; None for a description with no better side
    per_image: PerImage | None = None  # computed batch by batch (`compute_metrics`); None: `scores.score`
                                       # derives it from the whole evaluation set (N, nearest neighbours)

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher", None):
            raise ValueError(f"metric {self.key!r}: better must be 'lower', 'higher' or None, got {self.better!r}")

    def cell(self, value: float | None) -> str:
        return MISSING if value is None else self.fmt.format(value)

    def heading(self, arrow: bool = False) -> str:
        """The column title, with ↓ / ↑ for the better side when `arrow`."""
        return self.title + ({"lower": " ↓", "higher": " ↑"}.get(self.better, "") if arrow else "")

    def best(self, scored: Sequence[tuple[float, str]]) -> tuple[float, str]:
        """The best of (value, name) pairs by this metric's direction."""
        if self.better is None:
            raise ValueError(f"metric {self.key!r} describes, it does not rank: no best")
        return (max if self.better == "higher" else min)(scored)


METRICS: dict[str, Metric] = {metric.key: metric for metric in (
    Metric("image_error_pct", "image err. (%)", "{:.1f}", "lower"),      # the paper's ‖a − b‖₂ / N, image space
    Metric("feature_error_pct", "feature err. (%)", "{:.1f}", "lower"),  # the same at the inverted layer
    Metric("independent_feature_error_pct", "indep. feature err. (%)", "{:.1f}", "lower"),
    Metric("psnr", "PSNR (dB)", "{:.2f}", "higher", _psnr),
    Metric("ssim", "SSIM", "{:.3f}", "higher", _ssim),
    Metric("ms_ssim", "MS-SSIM", "{:.3f}", "higher", _ms_ssim),
    Metric("lpips", "LPIPS", "{:.3f}", "lower", _lpips),
    Metric("gradient_error_pct", "gradient err. (%)", "{:.0f}", "lower"),
    Metric("sharpness_pct", "sharpness (%)", "{:.0f}", None),  # gradient energy over the originals': noise counts
    # fine-scale power (periods ≤ 8 px) kept, off G's lattice (repro.evaluation.spectra): what the blur claim reads
    Metric("fine_power_pct", "fine power, off lattice (%)", "{:.0f}", None),
    Metric("lattice_excess", "lattice excess (×)", "{:.1f}", "lower"),  # power on G's lattice over what is due there
    Metric("nn_own_image_pct", "NN = own, image (%)", "{:.0f}", "higher"),
    Metric("nn_own_feature_pct", "NN = own, feature (%)", "{:.0f}", "higher"),
)}
IMAGE_METRICS = tuple(key for key, metric in METRICS.items() if metric.per_image is not None)
# The autoencoder comparison's columns: its metrics.md (`python -m repro.compare_autoencoders`) and results/README.md.
AUTOENCODER_METRICS = ("image_error_pct", "psnr", "ssim", "ms_ssim", "lpips")


def compute_metrics(recon: Tensor, target: Tensor, names: Sequence[str] | None = None, *,
                    lpips: LPIPSMetric | None = None, data_range: float = 1.0,
                    reduction: str = "none") -> dict[str, Tensor] | dict[str, float]:
    """Several per-image metrics of one batch.

    Args:
        recon, target: (B, 3, H, W) images in [0, data_range].
        names: keys of `IMAGE_METRICS`; None → psnr, ssim, ms_ssim, and lpips when `lpips` is given.
        lpips: the LPIPS network (needed for "lpips"), passed explicitly so callers build it once.
        reduction: "none" → {name: (B,) float64 per-image values} (sum them over batches, divide by the
            image count: `scores.image_metric_fn` does this); "mean" → {name: float} batch means.
    """
    if names is None:
        names = [name for name in IMAGE_METRICS if name != "lpips" or lpips is not None]
    unknown = [name for name in names if name not in IMAGE_METRICS]
    if unknown:
        raise ValueError(f"unknown per-image metric(s) {unknown}; registered: {sorted(IMAGE_METRICS)}")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    values = {name: METRICS[name].per_image(recon, target, data_range=data_range, lpips=lpips).double()
              for name in names}
    if reduction == "mean":
        return {name: float(value.mean()) for name, value in values.items()}
    return values
