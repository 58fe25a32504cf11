"""repro.collapse on real images: it must call a decoder that ignores its code collapsed, and must not call a
faithful (even noisy) one collapsed."""
from __future__ import annotations

import pytest
import torch

from repro.evaluation.collapse import MIN_SPREAD, collapse_record

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def originals(assets):
    from repro.data import list_images, load_images

    return load_images(list_images(assets / "imagenet-1k-256")[:48], 32)


def test_faithful_reconstructions_and_varied_samples_are_not_collapsed(originals):
    noisy = (originals + 0.1 * torch.randn(originals.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(originals, 3, 1, 1)  # a blurry but input-dependent decoder
    for reconstructions in (noisy, blurred):
        record = collapse_record(reconstructions, originals, samples=originals.flip(0))
        assert not record["collapsed"], record
        assert record["nn_own_image_pct"] > 90 and record["recon_spread"] > 0.5


def test_one_image_whatever_the_input_is_collapsed(originals):
    grey = originals.mean(0, keepdim=True).expand_as(originals)
    record = collapse_record(grey, originals, samples=grey[:16])
    assert record["collapsed"] and record["recon_spread"] < 1e-6 and record["sample_spread"] < 1e-6
    # one image plus a little per-input jitter: varied pixels, but no identification and little spread
    jitter = (grey + 0.02 * torch.rand(originals.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    record = collapse_record(jitter, originals)
    assert record["collapsed"] and record["recon_spread"] < MIN_SPREAD, record


def test_samples_alone_can_show_collapse(originals):
    """A VAE whose μ still decodes faithfully but whose prior samples are one image (KL term ignored)."""
    record = collapse_record(originals, originals, samples=originals[:1].expand(16, -1, -1, -1))
    assert record["collapsed"] and "sample_spread" in record["why"]


def test_shapes_must_match(originals):
    with pytest.raises(ValueError, match="same shape"):
        collapse_record(originals[:4], originals[:5])


def test_cli_measures_a_trained_vae_and_refuses_an_inversion_run(tmp_path, capsys):
    import json

    from repro.collapse import main
    from repro.config import make_config
    from repro.loop import train

    vae = make_config("smoke", {"model": "vae", "latent_dim": "32", "generator_width": "0.125",
                                "discriminator_width": "0.25"})
    train(vae, tmp_path / "vae")
    train(make_config("smoke"), tmp_path / "inversion")
    for folder, config in ((tmp_path / "vae", vae), (tmp_path / "inversion", make_config("smoke"))):
        (folder / "config.json").write_text(config.to_json())
    assert main([str(tmp_path / "vae"), "--n", "8", "--samples", "4", "--out", str(tmp_path / "c.json")]) == 0
    (record,) = json.loads((tmp_path / "c.json").read_text())["records"]
    assert record["model"] == "vae" and record["sample_spread"] is not None and "commit" in json.loads(
        (tmp_path / "c.json").read_text())
    # --step: the checkpoint of that step (collapse over training), a clear error for one not kept
    assert main([str(tmp_path / "vae"), "--n", "8", "--samples", "4", "--step", str(vae.steps), "--out",
                 str(tmp_path / "s.json")]) == 0
    (record,) = json.loads((tmp_path / "s.json").read_text())["records"]
    assert record["step"] == vae.steps
    assert main([str(tmp_path / "vae"), "--n", "8", "--step", str(vae.steps + 1)]) == 2
    assert f"no checkpoint of step {vae.steps + 1}" in capsys.readouterr().err
    assert main([str(tmp_path / "inversion"), "--n", "8"]) == 2  # one line, as every user error
    assert "is an inversion run" in capsys.readouterr().err
