"""The committed before/after checks (results/checks/*-numbers.json): a refactor's claim that it changed no
number holds only while every number of the two evaluations it records is identical."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKS = sorted((REPO / "results" / "checks").glob("*-numbers.json"))

pytestmark = pytest.mark.results


def differing(record: dict) -> list[str]:
    """The numbers (and protocol fields) that differ between the record's `before` and `after` evaluations."""
    before, after = record["before"], record["after"]
    out = [f"protocol.{k}" for k in set(before["protocol"]) | set(after["protocol"])
           if before["protocol"].get(k) != after["protocol"].get(k)]
    for b, a in zip(before["results"], after["results"], strict=True):
        out += [f"{b['method']}.{k}" for k, v in b.items() if isinstance(v, (int, float)) and a.get(k) != v]
    return out


@pytest.mark.parametrize("path", CHECKS, ids=[p.stem for p in CHECKS])
def test_a_refactor_check_records_identical_numbers(path):
    record = json.loads(path.read_text())
    assert record["before"]["provenance"]["commit"] != record["after"]["provenance"]["commit"]
    assert differing(record) == []


def test_a_changed_number_would_be_found():
    record = json.loads(CHECKS[-1].read_text())
    record["after"]["results"][0]["image_error_pct"] += 1e-9
    assert differing(record) == [f"{record['after']['results'][0]['method']}.image_error_pct"]
