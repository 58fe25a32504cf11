"""Protocol CONV5* (repro.config): the paper's 256×6×6 pool5 code from 96 px images, reaching the generator
unpooled; the optional λ_img schedule; D's Caffe loss_weight relative to its weight decay."""
from __future__ import annotations

import pytest
import torch

from repro.assets import asset_folder
from repro.comparators import build_comparator
from repro.config import ConfigError, lambda_img_at, make_config
from repro.data import list_images, load_images
from repro.evaluation.evaluate import protocol_name, protocol_of
from repro.loop import Trainer
from repro.models import build_parts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    files = list_images(asset_folder("caltech101", verify=False))
    return load_images(files[:8:2], 96)  # (4, 3, 96, 96), four categories


def test_conv5star_inverts_the_papers_code_from_96_px_images(images):
    config = make_config("conv5star", {"generator_width": "0.125", "discriminator_width": "0.25"})
    parts = build_parts(config, torch.device("cpu"))
    model = parts.model
    assert model.encoder.input_size == 227
    assert model.generator.in_shape == (256, 6, 6)  # 9,216 values on the paper's 6×6 grid
    assert model.generator.bridge == "code" and model.generator.full_side == 96
    assert parts.comparator is model.encoder and parts.shares_features  # C(x) is the code itself
    with torch.no_grad():
        recon, aux = model(images)
        # the code is pool5 of the image resized to 227 px, not of the 96 px image (which is 256×2×2)
        at_227 = build_comparator("alexnet", "pool5", 227)(
            torch.nn.functional.interpolate(images, size=(227, 227), mode="bilinear", align_corners=False))
        assert torch.allclose(aux["code"], at_227, atol=1e-5)
        assert build_comparator("alexnet", "pool5", 96)(images).shape[1:] == (256, 2, 2)
    assert recon.shape == images.shape
    protocol = protocol_of(config, 4, code_shape=model.generator.in_shape)
    assert protocol["protocol"] == "CONV5*" and protocol["code_shape"] == [256, 6, 6]
    assert not any(d.startswith("code ") for d in protocol["differences_from_paper"])
    # the seed is recorded, so that repro.reporting.claims can tell two seeds of one setting apart and measure their
    # spread
    assert protocol["encoder_resolution"] == 227 and protocol["seed"] == 0
    assert protocol_of(make_config("conv5star", {"seed": "1"}), 4)["seed"] == 1
    old = make_config("small-pool5")  # the 2×2 code is named for what it is, and its size set beside the paper's
    assert protocol_name(old) == "pool5@96px"
    assert any("1,024 values instead of the paper's 256×6×6 = 9,216 (11 %)" in d
               for d in protocol_of(old, 4, code_shape=(256, 2, 2))["differences_from_paper"])


def test_lambda_img_schedule_falls_geometrically_to_the_papers_value():
    config = make_config("conv5star", {"lambda_img_start": "2e-4", "lambda_img_decay_steps": "100"})
    assert lambda_img_at(config, 0) == pytest.approx(2e-4)
    assert lambda_img_at(config, 50) == pytest.approx(2e-5)  # halfway in log: √(2e-4 · 2e-6)
    assert lambda_img_at(config, 100) == lambda_img_at(config, 10_000) == pytest.approx(2e-6)
    assert lambda_img_at(make_config("conv5star-image"), 0) == 2e-6  # off unless a preset sets it
    assert lambda_img_at(make_config("conv5star"), 0) == pytest.approx(2e-4)  # the DeePSiM presets' warm start
    with pytest.raises(ConfigError, match="lambda_img_decay_steps"):
        make_config("conv5star-image", {"lambda_img_start": "2e-4"})
    with pytest.raises(ConfigError, match="decays to lambda_img"):
        make_config("conv5star-image", {"lambda_img_start": "1e-7", "lambda_img_decay_steps": "10"})


def test_the_trainer_follows_the_schedule(tmp_path):
    files = list_images(asset_folder("caltech101", verify=False))
    batch = load_images(files[:4], 64)
    config = make_config("smoke", {"lambda_img_start": "1e-4", "lambda_img_decay_steps": "2"})
    trainer = Trainer(config, tmp_path)
    seen = []
    for _ in range(3):
        seen.append(trainer.step(batch)["lambda_img"])
        trainer.step_count += 1
    assert seen == pytest.approx([1e-4, (1e-4 * 2e-6) ** 0.5, 2e-6])


def d_gradients(tmp_path, weight: float, batch: torch.Tensor) -> list[torch.Tensor]:
    # eager fp32 pinned: the two gradients agree to 1e-4 only without bf16 (the device's default path)
    trainer = Trainer(make_config("smoke", {"d_loss_weight": str(weight), "amp": "off", "channels_last": "false"}),
                      tmp_path)
    captured = []
    trainer.opt_d.register_step_pre_hook(
        lambda *_: captured.extend(p.grad.detach().clone() for p in trainer.d_params))
    torch.manual_seed(1)  # the same dropout masks in D
    trainer.step(batch)
    return captured


def test_d_loss_weight_scales_ds_gradient_before_its_decay(tmp_path):
    """Caffe's SoftmaxWithLoss loss_weight 100: D's gradient is 100× the raw loss's, and the solver's 4e-4 decay
    is added to that; with a raw loss (weight 1) the same decay would be 100× stronger relative to it."""
    files = list_images(asset_folder("caltech101", verify=False))
    batch = load_images(files[:4], 64)
    raw, weighted = d_gradients(tmp_path / "a", 1.0, batch), d_gradients(tmp_path / "b", 100.0, batch)
    assert len(raw) == len(weighted) > 0
    for a, b in zip(raw, weighted):
        assert float((b - 100 * a).norm() / b.norm()) < 1e-4
    assert make_config("conv5star").d_loss_weight == 100.0


@pytest.mark.parametrize("preset", ["ae-deepsim-conv5star", "vae-conv5star"])
def test_the_autoencoders_deepsim_comparator_sees_a_map_of_at_least_4x4(preset):
    """The CONV5* principle for the autoencoder and the VAE: their 64 px images reach the comparator as 227 px
    copies, so the feature term compares 6×6 pool5 maps; the older presets compare 1×1 (the wrong result)."""
    x = torch.rand(2, 3, 64, 64)
    shapes = {}
    for name in (preset, preset.replace("-conv5star", "") if preset.startswith("ae") else "vae"):
        parts = build_parts(make_config(name, {"generator_width": "0.125", "discriminator_width": "0.25"}),
                            torch.device("cpu"))
        with torch.no_grad():
            shapes[name] = tuple(parts.comparator(x).shape[-2:])
    assert shapes[preset] == (6, 6)
    assert min(shapes[name] for name in shapes if name != preset) == (1, 1)
