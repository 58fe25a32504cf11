"""Presets fed from committed results agree with them: small-pool5-tuned takes the λ the committed Ray Tune
search chose (results/tune/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.config import make_config

REPO = Path(__file__).resolve().parents[2]
BEST = REPO / "results" / "tune" / "small-pool5-pool5-20261202-cpu" / "best.json"

pytestmark = pytest.mark.results


def test_tuned_preset_is_the_committed_searchs_best():
    """The λ fed back into small-pool5-tuned are the ones the committed Ray Tune search chose."""
    chosen = json.loads(BEST.read_text())["preset"]
    tuned = make_config("small-pool5-tuned")
    assert {k: getattr(tuned, k) for k in chosen} == pytest.approx(chosen)
