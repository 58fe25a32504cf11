"""Where a generator's fine structure lies in frequency: how much of the originals' fine-scale power the
reconstructions keep, and how much of it piles up on the lattice of the generator's own up-sampling.

Why: the edge score (`metrics.gradient_error`, the `blur:edges` reading) is an L2 distance after a linear map
(finite differences), so the generator that minimises the image loss, which learns the conditional mean of the
images given the code, also minimises the gradient error in expectation; a sharp generator that places its
details with any uncertainty scores worse. These two numbers separate what that one score mixes: *blur*,
fine-scale power lost (`fine_power_ratio` ≪ 1), and a *lattice*, power concentrated at the harmonics of G's
up-sampling period, the checkerboard of strided transposed convolutions (Odena et al., Distill 2016;
`lattice_excess` ≫ 1). The blur claim reads the fine power off the lattice (`off_lattice_power_ratio`); it says
nothing of whether the details are right (noise of the right strength has a ratio of 1 too), which the
identification rule every claim pair is held to checks. Our addition; neither paper defines them.

`grid_pairs` reads the pairs back from a committed reconstruction grid (original | reconstruction, as
`repro.evaluate` writes them), so that runs whose checkpoints were not published can be measured alike.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

FINE_BAND = 8  # "fine": periods of at most 8 px (at 96 px: 12 cycles or more per image side)


def spectrum(images: Tensor) -> Tensor:
    """The 2-D Fourier transform of each image's mean-removed, Hann-windowed luminance (mean of the channels):
    (B, H, W) complex128 on the unshifted grid (index k = k cycles per image side; negative frequencies from the
    end)."""
    if images.dim() != 4:
        raise ValueError(f"spectrum: expected (B, C, H, W) images, got {tuple(images.shape)}")
    grey = images.double().mean(1)
    grey = grey - grey.mean(dim=(1, 2), keepdim=True)
    # a Hann window: without it the jump at the image's wrap-around edge puts power on both axes, which blur
    # does not remove and which the axes' lattice points would count
    window = torch.outer(torch.hann_window(grey.shape[1], periodic=False, dtype=torch.float64),
                         torch.hann_window(grey.shape[2], periodic=False, dtype=torch.float64))
    return torch.fft.fft2(grey * window)


def power_spectrum(images: Tensor) -> Tensor:
    """`spectrum`'s power summed over the batch: (H, W) float64."""
    return spectrum(images).abs().square().sum(0)


def frequencies(height: int, width: int) -> tuple[Tensor, Tensor]:
    """(fy, fx): the integer frequency of every cell of the unshifted (H, W) grid, in cycles per image side."""
    fy = torch.fft.fftfreq(height, 1 / height).round().long()[:, None].expand(height, width)
    fx = torch.fft.fftfreq(width, 1 / width).round().long()[None, :].expand(height, width)
    return fy, fx


def bands(height: int, width: int, period: int) -> tuple[Tensor, Tensor]:
    """(fine band, lattice points inside it) as boolean (H, W) masks on the unshifted frequency grid; the
    lattice: every frequency both of whose components are multiples of side / `period`."""
    if height % period or width % period:
        raise ValueError(f"the up-sampling period {period} must divide the image side ({height}×{width})")
    fy, fx = frequencies(height, width)
    fine = (fy.abs() * FINE_BAND >= height) | (fx.abs() * FINE_BAND >= width)
    lattice = fine & (fy % (height // period) == 0) & (fx % (width // period) == 0)
    return fine, lattice


def near(mask: Tensor) -> Tensor:
    """`mask` and its eight neighbours on the (periodic) frequency grid: the Hann window's main lobe spreads a
    pure tone over ±1 cycle, more of its power than stays on the tone's own cell."""
    out = mask.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= mask.roll((dy, dx), dims=(0, 1))
    return out


RING = 4  # width in cycles of the rings that set each lattice point's expected power (blur is radial)


def spectral_scores(reconstructions: Tensor, originals: Tensor, period: int) -> dict[str, float]:
    """`fine_power_ratio`: the reconstructions' power at periods ≤ 8 px over the originals' (1 = as much fine
    structure as the originals, 0 = all of it blurred away). `off_lattice_power_ratio`: the same ratio with G's
    lattice points and their window's spread (`near`) left out of both sums, so that a lattice cannot pass for
    fine detail (what the blur claim reads, `repro.reporting.claims`). `lattice_excess`: the reconstructions'
    power on the harmonics of `period` (G's total up-sampling factor: 16 for four ×2 up-convolutions) over what
    the rest of the fine band predicts there: the originals' power at each lattice point times the
    reconstruction/original ratio off the lattice in its ring of radius (so that blur, which falls with radius,
    cancels). 1 = no lattice."""
    if reconstructions.shape != originals.shape:
        raise ValueError(f"spectral_scores: reconstructions {tuple(reconstructions.shape)} and originals "
                         f"{tuple(originals.shape)} must have the same shape")
    rec, orig = power_spectrum(reconstructions), power_spectrum(originals)
    fine, lattice = bands(*rec.shape, period)
    fy, fx = frequencies(*rec.shape)
    ring = (fy.double().hypot(fx.double()) / RING).long()
    rest = fine & ~lattice
    expected = torch.zeros(())
    for r in ring[lattice].unique():
        in_ring = ring == r
        ratio = rec[rest & in_ring].sum() / orig[rest & in_ring].sum()
        expected = expected + orig[lattice & in_ring].sum() * ratio
    off_lattice = fine & ~near(lattice)
    return {"fine_power_ratio": float(rec[fine].sum() / orig[fine].sum()),
            "off_lattice_power_ratio": float(rec[off_lattice].sum() / orig[off_lattice].sum()),
            "lattice_excess": float(rec[lattice].sum() / expected)}


# Octave bands by period in px at 96 px (in general: side/period cycles per image side), coarse to fine
BANDS = ((">32px", 32, None), ("16-32px", 16, 32), ("8-16px", 8, 16), ("<=8px", None, 8))


def band_agreement(reconstructions: Tensor, originals: Tensor, period: int) -> dict[str, dict[str, float]]:
    """Per octave band (`BANDS`, G's lattice and its window spread left out), whether the reconstructions' structure
    is the originals': `power`, their power over the originals' (as `spectral_scores`), and `gain`, the in-phase
    part, Σ Re(R·O*) / Σ |O|² over the band's cells (1 = the originals' structure reproduced in place, 0 = none of
    it: blurred away, or drawn somewhere else, as noise or an invented texture is). Power without gain is detail
    the generator draws that the original does not have there. Our addition, to read the blur claim's power with."""
    if reconstructions.shape != originals.shape:
        raise ValueError(f"band_agreement: shapes differ: {tuple(reconstructions.shape)} vs {tuple(originals.shape)}")
    rec, orig = spectrum(reconstructions), spectrum(originals)
    height, width = originals.shape[-2:]
    fy, fx = frequencies(height, width)
    # the band of a cell: its coarser axis' period, as FINE_BAND counts "fine" (periods ≤ 8 px on either axis)
    cycles = torch.maximum(fy.abs() / height, fx.abs() / width)
    off_lattice = ~near(bands(height, width, period)[1])
    out = {}
    for name, shortest, longest in BANDS:
        band = off_lattice & (cycles > 0)
        if shortest is not None:
            band &= cycles * shortest <= 1
        if longest is not None:
            band &= cycles * longest > 1
        cross = (rec * orig.conj()).real[:, band].sum()
        orig_power = orig.abs().square()[:, band].sum()
        out[name] = {"power": float(rec.abs().square()[:, band].sum() / orig_power), "gain": float(cross / orig_power)}
    return out


def grid_pairs(path: Path, size: int, padding: int = 2) -> tuple[Tensor, Tensor]:
    """(originals, reconstructions) read back from a pair grid of `size`-px tiles laid out by torchvision's
    make_grid with `padding` (`repro.grids.write_grid`): (N, 3, size, size) each, RGB in [0, 1]."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    grid = torch.from_numpy(pixels).permute(2, 0, 1)
    step = size + padding
    rows, columns = (grid.shape[1] - padding) // step, (grid.shape[2] - padding) // step
    if rows < 1 or columns < 2 or columns % 2 or grid.shape[1] != padding + rows * step \
            or grid.shape[2] != padding + columns * step:
        raise ValueError(f"{path}: {grid.shape[2]}×{grid.shape[1]} px is not a grid of original | reconstruction "
                         f"pairs of {size} px tiles with {padding} px padding")
    tiles = [grid[:, padding + r * step: padding + r * step + size, padding + c * step: padding + c * step + size]
             for r in range(rows) for c in range(columns)]
    return torch.stack(tiles[0::2]), torch.stack(tiles[1::2])
