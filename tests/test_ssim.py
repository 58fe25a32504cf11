"""repro.ssim against pytorch_msssim on real images, the small-image scale fallback, and finite values and
gradients in the cases that give NaN to a naive implementation."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

from repro.ssim import (MS_SSIM_WEIGHTS, MSSSIMLoss, SSIMLoss, downsample, ms_ssim, ms_ssim_scales, ssim,
                        ssim_components, gaussian_window)

# The module (the package's `ssim` attribute is the function of that name, which shadows it).
REFERENCE_SSIM = importlib.import_module("pytorch_msssim.ssim")


@pytest.fixture(scope="module")
def photos(assets) -> torch.Tensor:
    """Four real 256×256 RGB photos in [0, 1], read with PIL (no resizing)."""
    files = sorted((assets / "imagenet-1k-256").glob("*.jpg"))[:4]
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def perturbed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Half the batch lightly noised, half blurred: realistic SSIM values well below 1."""
    g = torch.Generator().manual_seed(seed)
    noisy = (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    blurred = gaussian_blur(images, kernel_size=[7, 7], sigma=[2.0, 2.0])
    half = images.shape[0] // 2
    return torch.cat([noisy[:half], blurred[half:]])


# ---------------------------------------------------------------------------------------------------
# Against the reference implementation
# ---------------------------------------------------------------------------------------------------
def test_ssim_matches_pytorch_msssim(photos):
    distorted = perturbed(photos)
    ours = ssim(photos, distorted, reduction="none")
    reference = pytorch_msssim.ssim(photos, distorted, data_range=1.0, size_average=False)
    assert ours.shape == (4,)
    assert ours.max() < 0.95  # the perturbations matter, so the comparison is not 1 ≈ 1
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    # at a small size too (single-scale SSIM has no size limit beyond one window)
    small = F.interpolate(photos, size=64, mode="area")
    small_distorted = perturbed(small, seed=1)
    torch.testing.assert_close(ssim(small, small_distorted, reduction="none"),
                               pytorch_msssim.ssim(small, small_distorted, data_range=1.0, size_average=False),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("crop", [(256, 256), (192, 256)])
def test_ms_ssim_matches_pytorch_msssim_when_five_scales_fit(photos, crop):
    images = photos[..., : crop[0], : crop[1]]
    distorted = perturbed(images)
    ours = ms_ssim(images, distorted, reduction="none")
    reference = pytorch_msssim.ms_ssim(images, distorted, data_range=1.0, size_average=False)
    assert ours.max() < 0.99
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    assert float(ms_ssim(images, distorted)) == pytest.approx(float(reference.mean()), abs=1e-4)


def test_gaussian_window_is_the_standard_one():
    window = gaussian_window(11, 1.5)
    assert window.shape == (11,) and float(window.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(window, REFERENCE_SSIM._fspecial_gauss_1d(11, 1.5).flatten())


# ---------------------------------------------------------------------------------------------------
# Small images: as many scales as fit, weights renormalised
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side,scales", [(10, 0), (11, 1), (20, 1), (21, 2), (22, 2), (64, 3), (96, 4), (128, 4),
                                         (160, 4), (161, 5), (227, 5), (256, 5)])
def test_scales_that_fit(side, scales):
    # 5 scales exactly when side > (11 − 1)·2⁴ = 160, the bound pytorch_msssim asserts
    assert ms_ssim_scales(side, side, 11) == scales
    assert ms_ssim_scales(side, 1000, 11) == scales  # the smaller side decides


def test_small_image_fallback_equals_composition_of_reference_scales(photos):
    """At 64 px three scales fit; the result is the product of pytorch_msssim's per-scale terms with the first
    three standard weights renormalised (sides stay even, so pooling agrees)."""
    images = F.interpolate(photos, size=64, mode="area")
    distorted = perturbed(images)
    ours = ms_ssim(images, distorted, reduction="none")

    weights = torch.tensor(MS_SSIM_WEIGHTS[:3], dtype=torch.float64)
    weights = weights / weights.sum()
    window = REFERENCE_SSIM._fspecial_gauss_1d(11, 1.5).repeat(3, 1, 1, 1)
    x, y = images, distorted
    expected = unnormalised = torch.ones(4, 3, dtype=torch.float64)
    for level in range(3):
        ssim_pc, cs = REFERENCE_SSIM._ssim(x, y, data_range=1.0, win=window, size_average=False)
        factor = (ssim_pc if level == 2 else cs).double().clamp(min=0)
        expected = expected * factor ** weights[level]
        unnormalised = unnormalised * factor ** MS_SSIM_WEIGHTS[level]
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    torch.testing.assert_close(ours.double(), expected.mean(1), atol=1e-4, rtol=0)
    # the renormalisation matters: the first three standard weights alone give a clearly different value
    assert float((ours.double() - unnormalised.mean(1)).abs().min()) > 1e-3


def test_explicit_scales(photos):
    images = F.interpolate(photos, size=64, mode="area")
    distorted = perturbed(images)
    assert torch.equal(ms_ssim(images, distorted, scales=3), ms_ssim(images, distorted))
    assert float(ms_ssim(images, distorted, scales=2)) != pytest.approx(float(ms_ssim(images, distorted)), abs=1e-4)
    # one scale is plain SSIM (positive here, so the clamp at 0 does not act)
    torch.testing.assert_close(ms_ssim(images, distorted, scales=1, reduction="none"),
                               ssim(images, distorted, reduction="none"), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"4 scales.*\(4, 3, 64, 64\).*fit 3"):
        ms_ssim(images, distorted, scales=4)
    with pytest.raises(ValueError, match="scales must be in 1..5"):
        ms_ssim(images, distorted, scales=0)


def test_too_small_and_mismatched_inputs_raise_with_shapes():
    tiny = torch.rand(2, 3, 10, 40)
    with pytest.raises(ValueError, match=r"\(2, 3, 10, 40\).*11×11 window"):
        ms_ssim(tiny, tiny)
    with pytest.raises(ValueError, match=r"\(2, 3, 10, 40\)"):
        ssim(tiny, tiny)
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\) and \(2, 3, 32, 31\)"):
        ssim(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 31))
    with pytest.raises(ValueError, match="odd"):
        ssim(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), win_size=10)


def test_odd_sides_downsample_by_edge_replication():
    images = torch.rand(2, 3, 227, 113, generator=torch.Generator().manual_seed(0))
    down = downsample(images)
    assert down.shape == (2, 3, 114, 57)
    replicated = F.pad(images, (0, 1, 0, 1), mode="replicate")
    torch.testing.assert_close(down, F.avg_pool2d(replicated, 2))


# ---------------------------------------------------------------------------------------------------
# Stability: finite values and gradients
# ---------------------------------------------------------------------------------------------------
def hard_pairs(photos: torch.Tensor, side: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x = F.interpolate(photos[:2], size=side, mode="area")
    return {
        "identical": (x, x.clone()),
        "anti-correlated": (x, 1 - x),
        "zeros vs ones": (torch.zeros_like(x), torch.ones_like(x)),
        "constant": (torch.full_like(x, 0.3), torch.full_like(x, 0.3)),
        "constant vs image": (torch.full_like(x, 0.5), x),
    }


@pytest.mark.parametrize("side", [64, 176])  # 3 scales and 5 scales
@pytest.mark.parametrize("fn", [ssim, ms_ssim], ids=["ssim", "ms_ssim"])
def test_finite_values_and_gradients_in_hard_cases(photos, side, fn):
    for case, (x, y) in hard_pairs(photos, side).items():
        x = x.clone().requires_grad_(True)
        y = y.clone().requires_grad_(True)
        value = fn(x, y)
        value.backward()
        assert torch.isfinite(value), f"{fn.__name__} {case}: value {value}"
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all(), f"{fn.__name__} {case}: gradient"
        assert -1 - 1e-6 <= float(value) <= 1 + 1e-6, case
        if case == "identical":
            assert float(value) == pytest.approx(1.0, abs=1e-5)
    anti_x, anti_y = hard_pairs(photos, side)["anti-correlated"]
    if fn is ms_ssim:
        assert float(ms_ssim(anti_x, anti_y)) == 0.0  # a clamped factor: the product is 0, not NaN
    else:
        assert float(ssim(anti_x, anti_y)) < 0  # plain SSIM keeps its sign


def test_nonnegative_power_has_finite_gradient_at_zero():
    """Factors exactly 0 (and tiny positive ones) are where relu(c) ** w has an infinite derivative."""
    from repro.ssim import _nonnegative_pow

    factor = torch.tensor([-0.5, 0.0, 1e-30, 1e-6, 0.5], dtype=torch.float32, requires_grad=True)
    out = _nonnegative_pow(factor, 0.0448)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(factor.grad).all()
    assert out[0] == 0 and out[1] == 0 and factor.grad[0] == 0 and factor.grad[1] == 0
    assert float(out[4]) == pytest.approx(0.5**0.0448)
    assert float(factor.grad[4]) == pytest.approx(0.0448 * 0.5 ** (0.0448 - 1), rel=1e-5)


@pytest.mark.slow
def test_gradients_are_correct():
    """Finite differences in float64 (torch.autograd.gradcheck) through two scales."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 24, 24, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ms_ssim(x, t, scales=2), (y,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: ssim(x, t), (y,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------
def test_losses_are_one_minus_score_and_train(photos):
    target = F.interpolate(photos[:2], size=64, mode="area")
    start = perturbed(target)
    for loss_fn, score in ((SSIMLoss(), ssim), (MSSSIMLoss(), ms_ssim)):
        assert float(loss_fn(target, target)) == pytest.approx(0.0, abs=1e-5)
        assert float(loss_fn(start, target)) == pytest.approx(1 - float(score(start, target)), abs=1e-6)
        image = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([image], lr=0.01)
        first = float(loss_fn(image, target))
        for _ in range(15):
            optimiser.zero_grad()
            loss = loss_fn(image, target)
            loss.backward()
            optimiser.step()
        assert float(loss_fn(image, target)) < 0.7 * first, type(loss_fn).__name__


def test_components_are_one_for_identical_images(photos):
    x = photos[:1, :, :32, :32]
    value, cs = ssim_components(x, x, gaussian_window(11, 1.5), 1.0, 0.01, 0.03)
    assert value.shape == cs.shape == (1, 3)
    torch.testing.assert_close(value, torch.ones(1, 3))
    torch.testing.assert_close(cs, torch.ones(1, 3))
