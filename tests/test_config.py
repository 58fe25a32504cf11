"""Typed, loud configuration."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.config import PRESETS, ConfigError, from_dict, make_config


def test_presets_resolve_and_round_trip():
    for name in PRESETS:
        config = make_config(name)
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
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("small-pool5", overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'paper-fc9'"):
        make_config("paper-fc9")


def test_paper_values_are_the_defaults():
    config = make_config("paper-fc6")
    assert (config.lambda_feat, config.lambda_adv, config.lambda_img) == (0.01, 100.0, 2e-6)
    assert (config.lr, config.beta1, config.beta2, config.batch_size, config.resolution) == (2e-4, 0.9, 0.999, 64, 227)
    assert config.comparator_tap == "pool5" and config.layer == "fc6"


def test_tuned_preset_is_the_committed_searchs_best():
    """The λ fed back into small-pool5-tuned are the ones the committed Ray Tune search chose."""
    best = Path(__file__).resolve().parents[1] / "results/tune/small-pool5-pool5-20261202-cpu/best.json"
    chosen = json.loads(best.read_text())["preset"]
    tuned = make_config("small-pool5-tuned")
    assert {k: getattr(tuned, k) for k in chosen} == pytest.approx(chosen)
