"""Typed, loud configuration."""
from __future__ import annotations

import pytest

from repro.config import PRESETS, ConfigError, from_dict, make_config


def test_presets_resolve_and_round_trip():
    for name in PRESETS:
        config = make_config(name, PAPER_FILES if name.startswith("paper-") else None)
        assert from_dict(config.to_dict()) == config


def test_overrides_are_typed():
    config = make_config("small-pool5", {"steps": "5", "lambda_adv": "0", "mirror": "false",
                                         "lr_milestones": "10,20"})
    assert config.steps == 5 and config.lambda_adv == 0.0 and config.mirror is False
    assert config.lr_milestones == (10, 20)


@pytest.mark.parametrize("overrides, message", [
    ({"stepz": "5"}, "unknown config key 'stepz'"),
    ({"steps": "five"}, "steps: expected int"),
    ({"mirror": "maybe"}, "mirror: expected true/false"),
    ({"model": "gan"}, "model='gan'"),
    ({"lambda_img": "-1"}, "lambda_img must be"),
    ({"freeze_encoder_steps": "-1"}, "freeze_encoder_steps must be"),
    ({"freeze_encoder_steps": "100"}, "freeze_encoder_steps is for model=vae or autoencoder, not inversion"),
    ({"fine_tune_trunk": "false"}, "fine_tune_trunk=false is for model=vae"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("small-pool5", overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'paper-fc9'"):
        make_config("paper-fc9")


PAPER_FILES = {"encoder_weights": "/data/bvlc_reference_caffenet.caffemodel", "train_data": "/data/ILSVRC2012/train"}


def test_paper_values_are_the_defaults():
    config = make_config("paper-fc6", PAPER_FILES)
    assert (config.lambda_feat, config.lambda_adv, config.lambda_img) == (0.01, 100.0, 2e-6)
    assert (config.lr, config.beta1, config.beta2, config.batch_size, config.resolution) == (2e-4, 0.9, 0.999, 64, 227)
    assert config.comparator_tap == "pool5" and config.layer == "fc6"
    # the original setup: CaffeNet as encoder and comparator (one file names both), D sees the code, no cache
    assert (config.encoder, config.comparator) == ("caffenet", "caffenet")
    assert config.comparator_weights == config.encoder_weights
    assert config.discriminator_features and not config.data_cache


@pytest.mark.parametrize("preset", ["paper-pool5", "paper-fc6", "paper-fc7", "paper-fc8"])
def test_paper_presets_name_what_is_missing(preset):
    with pytest.raises(ConfigError) as err:
        make_config(preset)
    message = str(err.value)
    assert "\n" not in message and "encoder_weights" in message and "train_data" in message
    with pytest.raises(ConfigError, match="train_data"):
        make_config(preset, {"encoder_weights": PAPER_FILES["encoder_weights"]})


@pytest.mark.parametrize("tap", ["fc6", "fc7", "fc8"])
def test_pretrained_alexnet_refuses_taps_it_has_no_weights_for(tap):
    """Only conv1–5 of the pretrained AlexNet ship: fc taps would invert torch's random init."""
    with pytest.raises(ConfigError, match=f"encoder tap {tap} of the pretrained alexnet"):
        make_config("small-pool5", {"layer": tap})
    with pytest.raises(ConfigError, match=f"comparator tap {tap}"):
        make_config("small-pool5", {"comparator_tap": tap})
    assert make_config("small-pool5", {"layer": tap, "encoder_weights": "/x/alexnet.pth"}).layer == tap
    assert make_config("small-pool5", {"layer": tap, "encoder": "alexnet-random"}).layer == tap  # random on purpose


def test_the_discriminators_minimum_side_is_the_one_config_checks():
    from repro.config import DISCRIMINATOR_MIN_RESOLUTION
    from repro.nets.discriminator import min_resolution

    assert DISCRIMINATOR_MIN_RESOLUTION == min_resolution() == 63
