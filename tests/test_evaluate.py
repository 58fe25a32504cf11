"""`python -m repro.evaluate` on a real (tiny) run folder: metrics.json/metrics.md/figures with sane values,
Fig. 5/7 mechanics, and one-line errors with exit status 2 for bad arguments."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from repro import evaluate
from repro.evaluation import figures, scores
from repro.config import make_config
from repro.loop import Session, train

N_IMAGES = 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, assets):
    folder = tmp_path_factory.mktemp("smoke-run")
    config = make_config("smoke", {"eval_images": 4})
    (folder / "config.json").write_text(config.to_json())
    train(config, folder, Session(show_progress=False))
    return folder


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = [str(run_dir), "--n", str(N_IMAGES), "--mv-steps", "3", "--batch-size", "8", "--no-progress",
            "--out", str(out)]
    assert evaluate.main(argv) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_writes_metrics_tables_and_figures(evaluated):
    out, record = evaluated
    for name in ("metrics.json", "metrics.md", "reconstructions.webp", "reencoding.webp", "interpolation.webp",
                 "neighbours.webp", "mv-reconstructions.webp"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert record["preset"] == "smoke" and record["layer"] == "pool5"
    assert [r["method"] for r in record["results"]] == ["deepsim", "mahendran-vedaldi"]
    assert record["protocol"]["n_images"] == N_IMAGES and record["protocol"]["paper_protocol"] is False
    provenance = record["provenance"]
    assert provenance["step"] == 2 and provenance["n_images"] == N_IMAGES
    assert provenance["command"].startswith("python -m repro.evaluate") and provenance["commit"]
    assert len(provenance["data"]["files_sha256"]) == 64 and provenance["wall_time_s"] > 0
    table = (out / "metrics.md").read_text()
    assert "| deepsim |" in table and "| mahendran-vedaldi |" in table and "paper: AlexNet CONV5" in table
    assert "gradient err. (%)" in table and "indep. feature err. (%)" in table


def test_values_are_finite_and_in_range(evaluated):
    _, record = evaluated
    assert record["normalisers"]["image"] > 0 and record["normalisers"]["feature"] > 0
    for result in record["results"]:
        values = {k: v for k, v in result.items() if isinstance(v, float)}
        assert all(math.isfinite(v) for v in values.values()), result
        # A 2-step generator is barely better than a random image, never 5× worse.
        assert 0 < result["image_error_pct"] < 500 and 0 < result["feature_error_pct"] < 500
        assert 0 < result["psnr"] < 60
        assert -1 <= result["ssim"] <= 1 and -1 <= result["ms_ssim"] <= 1
        assert 0 <= result["lpips"] < 2 and result["sharpness_pct"] >= 0 and result["gradient_error_pct"] > 0
        assert 0 <= result["nn_own_image_pct"] <= 100 and 0 <= result["nn_own_feature_pct"] <= 100
        # SqueezeNet is neither the smoke run's encoder nor its comparator: measured, and on its own scale
        assert 0 < result["independent_feature_error_pct"] < 500
        assert result["identification"]["chance_pct"] == pytest.approx(100 / N_IMAGES)
    assert record["independent_net"] == "squeezenet:fire9/concat" and record["normalisers"]["independent"] > 0
    assert record["results"][0]["step"] == 2 and record["results"][1]["step"] is None


def test_gradient_energy_measures_contrast_on_real_images(assets):
    """Gradient energy (the descriptive sharpness): 0 for a flat image, lower after blurring, scaled by contrast."""
    from torchvision.transforms.functional import gaussian_blur

    from repro.data import list_images, load_images
    from repro.evaluation.metrics import gradient_energy

    images = load_images(list_images(assets / "imagenet-1k-256")[:6], 64)
    sharp, blurred = gradient_energy(images), gradient_energy(gaussian_blur(images, 9, 2.0))
    assert sharp.shape == (6,) and bool((blurred < 0.7 * sharp).all())
    assert torch.allclose(gradient_energy(images * 0.5 + 0.25), 0.5 * sharp)
    assert float(gradient_energy(torch.full((1, 3, 8, 8), 0.3)).max()) == 0.0
    with pytest.raises(ValueError, match="expected"):
        gradient_energy(images[0])


def degraded(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The original blurred, and at the same pixel error (RMS per image) the original plus white noise and
    the blurred original plus a 2-px checkerboard: the wrong results a sharpness score must not prefer."""
    from torchvision.transforms.functional import gaussian_blur

    blurred = gaussian_blur(images, 9, 2.0)
    rms = (blurred - images).flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    rows, cols = torch.meshgrid(torch.arange(images.shape[2]), torch.arange(images.shape[3]), indexing="ij")
    checkerboard = (((rows // 2 + cols // 2) % 2) * 2 - 1).float()
    return {"blurred": blurred, "noisy": images + rms * noise, "checkerboard": blurred + rms * checkerboard}


def test_gradient_error_prefers_blur_to_noise_and_texture_on_real_images(assets):
    """The control of the blur claim: at equal pixel error, the original + high-frequency noise and a
    checkerboard texture may not score closer to the original's structure than the original blurred — and
    gradient energy, the old sharpness score, is shown to fail exactly this control."""
    from repro.data import list_images, load_images
    from repro.evaluation.metrics import gradient_energy, gradient_error

    images = load_images(list_images(assets / "imagenet-1k-256")[:8], 96)
    wrong = degraded(images)
    error = {name: gradient_error(x, images) for name, x in wrong.items()}
    for name in ("noisy", "checkerboard"):
        assert bool((error[name] > error["blurred"]).all()), (name, error[name], error["blurred"])
    assert bool((error["blurred"] < 1).all())  # blur keeps part of the edges: between identical (0) and flat (1)
    assert float(gradient_error(images, images).max()) == 0.0
    assert torch.allclose(gradient_error(torch.full_like(images, 0.5), images), torch.ones(8, dtype=torch.float64))
    energy = {name: gradient_energy(x) for name, x in wrong.items()}  # the wrong score: noise and texture "win"
    assert bool((energy["noisy"] > energy["blurred"]).all() and (energy["checkerboard"] > energy["blurred"]).all())
    with pytest.raises(ValueError, match="flat"):
        gradient_error(images[:1], torch.full_like(images[:1], 0.3))


def test_identification_rule_separates_input_ignoring_generators(assets):
    """A generator that outputs one image whatever its input identifies its own original at chance (1/n) and is
    below the rule's threshold; the originals themselves (and a blurred copy) are far above it."""
    from torchvision.transforms.functional import gaussian_blur

    from repro.data import list_images, load_images

    images = load_images(list_images(assets / "imagenet-1k-256")[:40], 64)
    features = images.mean(dim=(2, 3))
    constant = images.mean(0, keepdim=True).expand_as(images).contiguous()

    def rule(reconstructions):
        result = {"nn_own_image_pct": 100 * float(scores.nearest_is_own(reconstructions, images).double().mean()),
                  "nn_own_feature_pct": 100 * float(scores.nearest_is_own(
                      reconstructions.mean(dim=(2, 3)), features).double().mean())}
        return scores.identification(result, images.shape[0])

    ignoring = rule(constant)
    assert ignoring["chance_pct"] == pytest.approx(2.5) and ignoring["threshold_pct"] == pytest.approx(25.0)
    assert ignoring["rate_pct"] <= ignoring["chance_pct"] and not ignoring["above_chance"]
    assert rule(gaussian_blur(images, 9, 2.0))["above_chance"] and rule(images)["rate_pct"] == 100.0


def test_figure_layouts(evaluated):
    out, _ = evaluated
    tile = 64 + 2  # 64 px images, 2 px padding
    columns = min(8, N_IMAGES)
    rows = figures.REENCODE_ITERATIONS + 1
    assert Image.open(out / "reencoding.webp").size == (columns * tile + 2, rows * tile + 2)
    width, height = Image.open(out / "interpolation.webp").size
    assert width == (figures.INTERPOLATION_STEPS + 2) * tile + 2 and height == 4 * tile + 2
    assert Image.open(out / "neighbours.webp").size == ((figures.NEIGHBOURS + 2) * tile + 2, 8 * tile + 2)


def test_reencoding_and_interpolation_mechanics(run_dir):
    from repro.runs import load_run

    model = load_run(run_dir, "cpu").parts.model
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64).unbind(0)
    path = figures.interpolate(model, a, b, 5)
    with torch.no_grad():
        ends = model.decode(model.encode(torch.stack([a, b]))).clamp(0, 1)
    assert path.shape == (5, 3, 64, 64)
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(path[-1], ends[1], atol=1e-5)
    sequence = figures.reencode(model, torch.stack([a, b]), 3)
    assert sequence.shape == (4, 2, 3, 64, 64) and torch.equal(sequence[0], torch.stack([a, b]))
    assert torch.allclose(sequence[1], ends, atol=1e-5)


def test_method_names_follow_the_loss_terms():
    assert scores.method_of(make_config("small-pool5")) == "deepsim"
    assert scores.method_of(make_config("small-pool5-image")) == "image-loss"
    assert scores.method_of(make_config("ablation-no-adv")) == "deepsim-no-adv"
    assert scores.method_of(make_config("ablation-no-feat")) == "deepsim-no-feat"
    assert scores.comparator_of(make_config("small-pool5")) == "alexnet:pool5"
    assert scores.comparator_of(make_config("small-pool5-image")) is None


def test_bad_arguments_exit_2_with_one_line(tmp_path, run_dir, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text((run_dir / "config.json").read_text())
    cases = {
        "does not exist": [str(tmp_path / "missing")],
        "not a run folder": [str(empty)],
        "no intact checkpoint": [str(no_checkpoint)],
        "--n must be": [str(run_dir), "--n", "1"],
        "unrecognized arguments": [str(run_dir), "--bogus"],
    }
    for expected, argv in cases.items():
        assert evaluate.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and expected in err and "\n" not in err, err


def test_a_chosen_checkpoint_step_is_evaluated(run_dir, tmp_path, capsys):
    out = tmp_path / "at-step-1"
    argv = [str(run_dir), "--n", "4", "--step", "1", "--no-progress", "--out", str(out)]
    assert evaluate.main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["provenance"]["step"] == 1 and record["results"][0]["step"] == 1
    assert evaluate.main([str(run_dir), "--n", "4", "--step", "7", "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint of step 7" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["autoencoder", "vae"])
def test_one_measure_scores_autoencoders_and_vaes(kind, assets):
    """`measure` is the one measurement of every model kind (compare_autoencoders uses it): in eval mode, so a
    VAE that comes in training mode is measured on μ, not on a sample, and is left in training mode; its
    image error is the paper's on the clamped reconstructions; its features are its own code of them."""
    from repro.autoencoders import build_model
    from repro.data import list_images, load_images
    from repro.evaluation.metrics import normalised_error

    config = make_config("smoke", {"model": kind, "latent_dim": "8", "generator_width": "0.125",
                                   "discriminator_width": "0.25"})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _ = build_model(config)
    images = load_images(list_images(assets / "imagenet-1k-256")[:6], 64)
    model.train()
    reference = scores.reference_of(model, images, batch_size=4)
    numbers, reconstructions, features = scores.measure(model, reference, lambda a, b: {}, batch_size=4)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(images)[0].clamp(0, 1)
        torch.testing.assert_close(reconstructions, expected)
        torch.testing.assert_close(features, model.encode(expected))
        torch.testing.assert_close(reference.features, model.encode(images))
    assert numbers["image_error_pct"] == pytest.approx(100 * normalised_error(expected, images))
    assert numbers["identification"]["chance_pct"] == pytest.approx(100 / 6)


def test_spectral_scores_follow_the_generators_lattice(assets):
    """The fine power off G's lattice is scored where G's up-sampling period divides the image (CONV5*: a 6×6 code,
    four ×2 up-convolutions, period 16 at 96 px) and left out where it cannot lie on whole frequencies."""
    from types import SimpleNamespace

    from repro.data import list_images, load_images
    from repro.evaluation.scores import lattice_period_of, make_reference, score
    from repro.nets.generator import Generator

    assert lattice_period_of(SimpleNamespace(generator=Generator((256, 6, 6), 96, width=0.125))) == 16
    assert lattice_period_of(SimpleNamespace(generator=Generator((256, 2, 2), 96, width=0.125))) is None  # 64 ∤ 96
    assert lattice_period_of(SimpleNamespace()) is None
    images = load_images(list_images(assets / "imagenet-1k-256")[:8], 96)
    features = images.mean((2, 3))
    no_metrics = lambda a, b: {}  # noqa: E731 (the image metrics are not under test here)
    ref = make_reference(images, features, lattice_period=16)
    same = score(ref, images, features, no_metrics)
    assert same["fine_power_pct"] == pytest.approx(100) and same["lattice_excess"] == pytest.approx(1)
    flat = score(ref, images.mean((2, 3), keepdim=True).expand_as(images), features, no_metrics)
    assert flat["fine_power_pct"] < 1
    assert "fine_power_pct" not in score(make_reference(images, features), images, features, no_metrics)
