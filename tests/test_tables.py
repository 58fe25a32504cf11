"""One metric registry (`repro.evaluation.metrics.METRICS`: title, format, better side) and one Markdown-table
writer (`repro.evaluation.tables.markdown_table`) behind every table we publish."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from repro import compare_autoencoders
from repro.config import make_config
from repro.evaluation import evaluate
from repro.evaluation.metrics import METRICS
from repro.evaluation.tables import markdown_table
from repro.reporting import report
from tune import export

REPO = Path(__file__).resolve().parents[1]


def test_markdown_table_writes_header_separator_rows_and_refuses_a_ragged_row():
    assert markdown_table(["model", "LPIPS"], [["ae-se", "0.500"]]) == [
        "| model | LPIPS |", "|---|---|", "| ae-se | 0.500 |"]
    with pytest.raises(ValueError, match="a row of 1 cells under 2 columns"):
        markdown_table(["model", "LPIPS"], [["ae-se"]])


def test_every_table_writer_takes_title_format_and_direction_from_the_registry(tmp_path, monkeypatch):
    """Change LPIPS in the registry only; evaluate's, compare_autoencoders', the report's and a λ search's
    tables all follow (none keeps a copy), and the report's preference follows the new direction."""
    monkeypatch.setitem(METRICS, "lpips", dataclasses.replace(METRICS["lpips"], title="LPIPS-x", fmt="<{:.4f}>",
                                                              better="higher"))
    ae_results = {"ae-se": {"model": "autoencoder", "image_error_pct": 40.0, "lpips": 0.5, "wall_time_s": 1.0},
                  "ae-deepsim": {"model": "autoencoder", "image_error_pct": 50.0, "lpips": 0.3, "wall_time_s": 1.0}}

    # repro.evaluate: metrics.md
    record = {"run": "runs/x", "preset": "smoke", "layer": "pool5", "independent_net": "–", "figures": {},
              "protocol": {"encoder": "alexnet", "resolution": 64, "n_images": 8, "eval_data": "imagenet-1k-256",
                           "differences_from_paper": []},
              "provenance": {"step": 2}, "results": [{"method": "deepsim", "image_error_pct": 61.0, "lpips": 0.5}]}
    table = evaluate.markdown(record)
    assert "| LPIPS-x |" in table and "| <0.5000> |" in table and "| LPIPS |" not in table

    # repro.compare_autoencoders: metrics.md, the better side as an arrow
    config = make_config("ae-se", {}).to_dict()
    prov = {"resolution": 64, "steps": 10, "n_eval": 8, "device": "cpu", "commit": "abc", "command": "python -m x",
            "data": {"train": "caltech101", "eval": {"folder": "imagenet-1k-256"}}}
    table = compare_autoencoders.markdown({"results": ae_results, "configs": {"ae-se": config}, "provenance": prov})
    assert "| LPIPS-x ↑ |" in table and "| <0.5000> |" in table and "LPIPS ↓" not in table

    # repro.report: results/README.md's autoencoder table and the loss each metric prefers
    shutil.copy(REPO / "results" / "paper_table2.json", tmp_path)
    (tmp_path / "autoencoders" / "x").mkdir(parents=True)
    (tmp_path / "autoencoders" / "x" / "metrics.json").write_text(json.dumps({"results": ae_results,
                                                                              "provenance": prov}))
    page = report.render(tmp_path)
    assert "| LPIPS-x ↑ |" in page and "| <0.3000> |" in page
    assert "LPIPS-x prefers **ae-se**" in page and "image err. (%) prefers **ae-se**" in page

    # tune.export: a search's results.md
    rows = [{"rank": 1, "trial": "t0", "status": "finished", "step": 10, "objective": 0.25, "image_error_pct": 61.0,
             "feature_error_pct": 70.0, "lambda_feat": 0.01, "lpips": 0.5, "best_objective": 0.25, "starts": 1,
             "run_dir": "runs/t0"}]
    search = {"name": "s", "steps_per_trial": 10, "config": {"resolution": 64, "eval_data": "imagenet-1k-256"},
              "options": {"preset": "small-pool5", "overrides": {}, "scheduler": "asha", "searcher": "random",
                          "eval_images": 8},
              "target": {"label": "paper:pool5", "image": 0.43, "feature": 0.37},
              "space": {"lambda_feat": {"low": 0.001, "high": 0.1}}, "sessions": [{"command": "python -m tune.search"}],
              "provenance": {"commit": "abc", "data": {}}}
    export.write_table(rows, tmp_path, search, ["lambda_feat"])
    table = (tmp_path / "results.md").read_text()
    assert "| LPIPS-x |" in table and "| <0.5000> |" in table and "| image err. (%) |" in table
    assert "lpips" in (tmp_path / "results.csv").read_text().splitlines()[0].split(",")  # the CSV keeps the keys
