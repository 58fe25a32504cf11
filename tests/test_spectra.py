"""Blur and lattice in frequency (repro.evaluation.spectra) on real images: each score must tell the wrong
results apart — the original blurred, plus white noise, plus a lattice at G's up-sampling period — and read
grids back exactly."""
from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from repro import spectra
from repro.data import list_images, load_images
from repro.evaluation.spectra import grid_pairs, spectral_scores
from repro.grids import write_grid


@pytest.fixture(scope="module")
def images(assets):
    return load_images(list_images(assets / "imagenet-1k-256")[:16], 96)


def lattice(shape: torch.Size, period: int) -> torch.Tensor:
    """A pattern repeating every `period` px in both directions (what strided up-convolutions leave)."""
    pattern = torch.randn(period, period, generator=torch.Generator().manual_seed(1))
    return pattern.repeat(shape[-2] // period, shape[-1] // period).expand(shape)


def test_scores_separate_blur_noise_and_lattice(images):
    rms = 0.05
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    cases = {"same": images, "blurred": gaussian_blur(images, 9, 2.0), "noisy": images + rms * noise,
             "lattice": images + rms * lattice(images.shape, 16)}
    scores = {name: spectral_scores(x, images, period=16) for name, x in cases.items()}
    assert scores["same"] == pytest.approx({"fine_power_ratio": 1.0, "off_lattice_power_ratio": 1.0,
                                            "lattice_excess": 1.0})
    assert scores["blurred"]["fine_power_ratio"] < 0.2            # blur: the fine power is gone…
    assert 0.5 < scores["blurred"]["lattice_excess"] < 2          # …on and off the lattice alike
    assert scores["noisy"]["fine_power_ratio"] > 1                # noise has fine power: a description, no claim
    assert 0.5 < scores["noisy"]["lattice_excess"] < 2
    assert scores["lattice"]["lattice_excess"] > 5                # the lattice is told from noise…
    assert scores["lattice"]["off_lattice_power_ratio"] < 1.1     # …and does not pass for fine detail off it
    assert scores["blurred"]["off_lattice_power_ratio"] < 0.2
    # a lattice of another period than G's is not counted as G's
    assert spectral_scores(images + rms * lattice(images.shape, 3), images, period=16)["lattice_excess"] < 2


def test_grid_round_trip_and_command(images, tmp_path, capsys):
    path = tmp_path / "reconstructions.png"
    blurred = gaussian_blur(images[:8], 9, 2.0)
    write_grid(path, images[:8], blurred)
    originals, reconstructions = grid_pairs(path, 96)
    assert originals.shape == (8, 3, 96, 96)
    assert torch.allclose(originals, images[:8], atol=1 / 255)
    assert torch.allclose(reconstructions, blurred, atol=1 / 255)
    out = tmp_path / "spectra.json"
    assert spectra.main([str(path), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["grids"][0]["images"] == 8 and record["grids"][0]["fine_power_ratio"] < 0.2
    assert "repro.spectra" in record["provenance"]["command"]
    with pytest.raises(ValueError, match="not a grid"):
        grid_pairs(path, 64)
    (tmp_path / "bad.webp").write_text("not an image")
    assert spectra.main([str(tmp_path / "bad.webp"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith("error:")


def test_blur_is_read_in_power_not_in_gradient_error(images):
    """Why the blur claim reads the fine power, not the gradient error (repro.reporting.claims): a sharp generator
    that is unsure where the fine details go can at best draw them from the right distribution (the blurred
    original plus another image's fine detail stands in for such a sample). Its gradient error is then about √2
    times the conditional mean's (the blurred original's, what the image loss learns), however sharp it is;
    the off-lattice power tells the two apart."""
    from repro.evaluation.metrics import gradient_error

    mean = gaussian_blur(images, 9, 2.0)
    other = images.roll(1, dims=0)
    sample = mean + (other - gaussian_blur(other, 9, 2.0))
    assert gradient_error(sample, images).mean() > 1.25 * gradient_error(mean, images).mean()
    sharp, blurred = (spectral_scores(x, images, period=16)["off_lattice_power_ratio"] for x in (sample, mean))
    assert sharp > 0.5 > 0.2 > blurred


def test_band_agreement_tells_the_originals_detail_from_drawn_detail(images):
    """Power says how much detail, gain whether it is the original's: the originals themselves have power and gain
    1 in every band; a blur keeps the coarse bands and loses the fine ones in both; the same sample as above has
    the fine power but not the gain (its fine detail is another image's); and the originals shifted by 3 px, the
    right detail in the wrong place, keep the power and lose the fine gain."""
    from repro.evaluation.spectra import band_agreement

    def read(x):
        return band_agreement(x, images, period=16)

    same = read(images)
    assert all(abs(b["power"] - 1) < 1e-9 and abs(b["gain"] - 1) < 1e-9 for b in same.values())
    blurred = read(gaussian_blur(images, 9, 2.0))
    assert blurred[">32px"]["gain"] > 0.8 and blurred["<=8px"]["gain"] < 0.2 and blurred["<=8px"]["power"] < 0.2
    mean = gaussian_blur(images, 9, 2.0)
    other = images.roll(1, dims=0)
    sample = read(mean + (other - gaussian_blur(other, 9, 2.0)))
    assert sample["<=8px"]["power"] > 0.5 and abs(sample["<=8px"]["gain"]) < 0.2
    shifted = read(images.roll(3, dims=3))
    assert shifted["<=8px"]["power"] > 0.9 and shifted["<=8px"]["gain"] < 0.3 < shifted[">32px"]["gain"]
    with pytest.raises(ValueError, match="shapes differ"):
        band_agreement(images[:2], images[:3], period=16)
