"""Mahendran & Vedaldi's optimisation (repro.evaluation.baselines) on real images: it lowers its feature loss, its
TV^β prior prefers smooth images and has the value of its definition on a toy case."""
from __future__ import annotations

import pytest
import torch

from repro.evaluation.baselines import (MVConfig, MVDiverged, MVObjective, config_for_layer, from_caffe_units,
                                        invert_images, to_caffe_units, tv_beta)
from repro.comparators import build_comparator
from repro.data import list_images, load_images


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(assets):
    files = list_images(assets / "imagenet-1k-256")[:2]
    return load_images(files, 64)


@pytest.fixture(scope="module")
def encoder():
    return build_comparator("alexnet", "pool5", 64)


@pytest.mark.parametrize("optimizer,lr,steps", [("sgd", 0.004, 40), ("adam", 30.0, 40), ("lbfgs", 1.0, 15)])
def test_mv_lowers_its_feature_loss(images, encoder, optimizer, lr, steps):
    config = config_for_layer("pool5", steps=steps, optimizer=optimizer, lr=lr)
    result = invert_images(encoder, images, config, progress=False)
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == steps + 1
    assert result.images.shape == images.shape and torch.isfinite(result.images).all()
    assert last["total"] < 0.1 * first["total"], (first, last)
    assert last["feature"] < 0.6 * first["feature"], (first, last)
    # The features of the result really are closer to the target than those of the noise start.
    with torch.no_grad():
        target = encoder(images)
        achieved = (encoder(result.images) - target).flatten(1).square().sum(1) / target.flatten(1).square().sum(1)
    assert torch.allclose(achieved.mean(), torch.tensor(last["feature"]), rtol=1e-3)


def test_a_diverging_optimisation_stops_with_its_step_not_nan_metrics(images, encoder):
    """A rate far too high (what happened at CONV5* with M&V's SGD rate on one batch): an error naming the step
    and the images, instead of NaN reconstructions scored as if they were results."""
    config = config_for_layer("pool5", steps=40, lr=1e4)
    with pytest.raises(MVDiverged, match=r"diverged at step \d+ of 40"):
        invert_images(encoder, images, config, progress=False)


def test_an_image_that_blows_up_steps_back_and_the_run_goes_on(images, encoder):
    """The guard (ours, not M&V's): at 50× M&V's rate both images blow up within two steps; each goes back to
    its best point with its rate halved, and the run ends finite with its feature loss lowered. At M&V's own
    rate the guard never acts, so the optimisation is exactly theirs."""
    result = invert_images(encoder, images, config_for_layer("pool5", steps=40, lr=0.2), progress=False)
    assert result.backoffs and {b["image"] for b in result.backoffs} == {0, 1}
    assert torch.isfinite(result.images).all()
    assert result.history[-1]["feature"] < 0.6 * result.history[0]["feature"]
    plain = invert_images(encoder, images, config_for_layer("pool5", steps=40), progress=False)
    assert plain.backoffs == []


def test_objective_is_zero_feature_loss_at_the_original(images, encoder):
    x = to_caffe_units(images)
    assert torch.allclose(from_caffe_units(x), images, atol=1e-6)
    with torch.no_grad():
        terms = MVObjective(encoder, encoder(images), MVConfig())(x)
    assert terms["feature"].abs().max() < 1e-6
    assert (terms["tv"] > 0).all() and (terms["bound"] > 0).all()


def test_tv_prefers_smooth_images(images):
    smooth = to_caffe_units(images)
    torch.manual_seed(0)
    noise = to_caffe_units(torch.rand_like(images))
    blurred = to_caffe_units(torch.nn.functional.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False))
    for beta in (1.0, 2.0):
        tv_smooth, tv_noise, tv_blurred = tv_beta(smooth, beta), tv_beta(noise, beta), tv_beta(blurred, beta)
        assert (tv_smooth < 0.5 * tv_noise).all(), (beta, tv_smooth, tv_noise)
        assert (tv_blurred < tv_smooth).all()
    assert tv_beta(torch.full((1, 3, 8, 8), 7.0)).item() == 0.0


def test_tv_matches_its_definition_on_a_toy_image():
    # x = [[0, 1], [2, 3]]: forward differences with the border repeated give dx = [[1, 0], [1, 0]],
    # dy = [[2, 2], [0, 0]]; squared magnitudes [[5, 4], [1, 0]].
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    assert tv_beta(x, 2.0).item() == pytest.approx(10.0)
    assert tv_beta(x, 1.0).item() == pytest.approx(5 ** 0.5 + 2 + 1, rel=1e-5)


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="optimizer"):
        MVConfig(optimizer="newton")
    with pytest.raises(ValueError, match="init"):
        MVConfig(init="zeros")
    assert config_for_layer("conv1").lambda_tv < config_for_layer("conv3").lambda_tv < config_for_layer("fc6").lambda_tv
