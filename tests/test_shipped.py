"""The generator shipped with the package (repro.shipped): a fresh clone inverts its own photos in one command,
and the reconstructions follow each photo (they differ per photo, keep its colours and its layout)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repro import invert
from repro.data import list_images, load_images
from repro.generator_file import SHIPPED, load_generator
from repro.models import Inverter
from repro.shipped import CARD, MAX_BYTES

pytestmark = pytest.mark.usefixtures("one_thread")
N_PHOTOS = 8


@pytest.fixture(scope="module")
def photos(assets, tmp_path_factory):
    """Photos no run trained on: ILSVRC images past the 256 that evaluations use, and Caffe's own two."""
    folder = tmp_path_factory.mktemp("photos")
    files = list_images(assets / "imagenet-1k-256")[500 : 500 + N_PHOTOS - 2]
    files += [assets / "caffe" / "cat.jpg", assets / "caffe" / "fish-bike.jpg"]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def follows_its_photos(originals: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
    """How far reconstructions follow their own photos: distinctness, colour and layout."""
    n = originals.shape[0]
    small = lambda x: F.adaptive_avg_pool2d(x, 12).flatten(1)  # noqa: E731 - layout and colour, not texture
    distances = torch.cdist(small(recon), small(originals))
    own = (distances.argmin(1) == torch.arange(n)).float().mean()
    spread = torch.pdist(small(recon)).min() / torch.pdist(small(originals)).mean()
    means = torch.stack([originals.mean((2, 3)).flatten(), recon.mean((2, 3)).flatten()])
    return {"own": float(own), "spread": float(spread), "colour_r": float(torch.corrcoef(means)[0, 1])}


GOOD = {"own": 0.6, "spread": 0.05, "colour_r": 0.7}


def passes(scores: dict[str, float]) -> bool:
    return all(scores[k] >= v for k, v in GOOD.items())


def test_the_shipped_generator_is_a_small_valid_file_with_a_model_card():
    assert SHIPPED.is_file() and SHIPPED.stat().st_size <= MAX_BYTES
    loaded = load_generator(SHIPPED)  # checks its sha256
    assert loaded.in_shape == (256, 6, 6) and loaded.resolution == 96 and loaded.encoder_input_size == 227
    card = CARD.read_text()
    assert loaded.sha256 in card and "nearest own original" in card and "python -m repro.shipped" in card


def test_invert_without_a_generator_uses_the_shipped_one_and_follows_each_photo(photos, tmp_path):
    assert invert.main([str(photos), "--out", str(tmp_path / "out")]) == 0
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == N_PHOTOS + 1  # one pair per photo + grid.png
    loaded = load_generator(SHIPPED)
    originals = load_images([photos], loaded.resolution)
    with torch.no_grad():
        recon = Inverter.from_file(loaded)(originals)[0].clamp(0, 1)
    scores = follows_its_photos(originals, recon)
    assert passes(scores), scores
    # the plausible wrong results fail the same check: one image for every photo, and noise
    assert not passes(follows_its_photos(originals, recon[:1].expand_as(recon)))
    assert not passes(follows_its_photos(originals, torch.rand(recon.shape, generator=torch.Generator().manual_seed(0))))


def test_init_generator_warm_starts_from_the_shipped_file_and_refuses_a_misfit():
    """Config.init_generator: G of a fresh CONV5* run is the shipped generator, weight for weight; a run whose
    generator differs (another side, width and code) gets one error naming the differences, not a silent init."""
    from repro.config import ConfigError, make_config
    from repro.generator_file import GeneratorFileError
    from repro.models import build_parts

    shipped = load_generator(SHIPPED).generator
    parts = build_parts(make_config("conv5star", {"init_generator": "shipped", "amp": "off",
                                                  "channels_last": "false"}), torch.device("cpu"))
    started = parts.model.generator.state_dict()
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(started[name], tensor), name
    random_init = build_parts(make_config("conv5star", {"amp": "off", "channels_last": "false"}), torch.device("cpu"))
    assert not all(torch.equal(tensor, started[name])
                   for name, tensor in random_init.model.generator.state_dict().items() if tensor.is_floating_point())
    with pytest.raises(GeneratorFileError, match="width|resolution|in_shape"):
        build_parts(make_config("smoke", {"init_generator": "shipped"}), torch.device("cpu"))
    with pytest.raises(ConfigError, match="init_generator"):
        make_config("vae", {"init_generator": "shipped"})
