"""The one rule of what a config needs (`repro.needs`): which networks it builds, which weights files they read,
and what only the user can give; the places that ask (provenance, cluster shipping, validation) agree with it."""
from __future__ import annotations

import pytest

from repro import provenance
from repro.cluster.shipping import weight_files
from repro.config import ConfigError, make_config
from repro.needs import missing_inputs, nets_used, uses_comparator, uses_discriminator

PRESETS = ["conv5star-warm", "conv5star-warm-image", "conv5star-warm-no-feat", "conv5star-warm-no-adv",
           "conv5star-warm-random-comparator", "vae-se", "vae-conv5star", "ae-ms-ssim", "small-pool5"]


def roles(preset: str) -> list[tuple[str, str]]:
    return [(use.role, use.name) for use in nets_used(make_config(preset))]


def test_the_rule_on_the_presets():
    assert roles("conv5star-warm") == [("encoder", "alexnet"), ("comparator", "alexnet")]
    assert roles("conv5star-warm-image") == [("encoder", "alexnet")]  # no feature term: no comparator
    assert roles("conv5star-warm-no-feat") == [("encoder", "alexnet")]
    assert roles("conv5star-warm-random-comparator") == [("encoder", "alexnet"), ("comparator", "caffenet-random")]
    assert roles("vae-se") == [("encoder", "alexnet")]  # the trunk starts from AlexNet's weights (the paper)
    assert roles("vae-conv5star") == [("encoder", "alexnet"), ("comparator", "alexnet")]
    warm = make_config("conv5star-warm")
    assert uses_comparator(warm) and uses_discriminator(warm)
    assert not uses_discriminator(make_config("conv5star-warm-no-adv"))
    assert not uses_comparator(make_config("conv5star-warm-image"))


def test_a_vae_trunk_of_another_architecture_reads_no_file():
    config = make_config("vae-se", {"comparator": "videonet", "comparator_weights": "x.caffemodel"})
    assert nets_used(config) == []  # random trunk (the paper: "at random when using VideoNet"), se: no comparator


@pytest.mark.parametrize("preset", PRESETS)
def test_provenance_and_shipping_ask_the_rule(preset):
    config = make_config(preset)
    used = {use.role for use in nets_used(config)}
    assert set(provenance.weights(config)) - {"init_generator"} == used
    cached = any(use.cached for use in nets_used(config))
    assert [field for field, _ in weight_files(config)] == (["cache"] if cached else [])


def test_what_only_the_user_can_give():
    with pytest.raises(ConfigError, match="comparator_weights=FILE .*caffenet"):
        make_config("conv5star-warm", {"comparator": "caffenet"})
    no_feat = make_config("conv5star-warm-no-feat", {"comparator": "caffenet"})  # its comparator is never built,
    assert missing_inputs(no_feat) == []  # so it needs no file
