"""Export of a finished search: results.csv and results.md (best first), best.json (with the preset to add).

The objective against each λ is plotted by TensorBoard from Tune's own logs: `tensorboard --logdir EXPERIMENT`.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

from repro import storage
from repro.config import PRESETS
from repro.grids import FIGURE_SUFFIXES
from repro.evaluation.metrics import METRICS
from repro.evaluation.tables import markdown_table
from tune.spaces import PAPER_LAMBDAS

# The errors the objective is computed from: a column of every trial. The other metrics of
# repro.evaluation.scores.score (repro.evaluation.metrics.METRICS) follow the λ, those the trials reported.
ERRORS = ("image_error_pct", "feature_error_pct")
QUALITY = tuple(key for key in METRICS if key not in ERRORS)
STATUS_ORDER = {"finished": 0, "stopped early": 1, "error": 2, "no result": 3}


def collect(results, experiment: str, lambda_names: list[str], steps: int) -> list[dict[str, Any]]:
    """One row per trial from Tune's ResultGrid (its dataframes of last and best reports), ranked: trials that
    ran the whole schedule by their final objective, then trials the scheduler stopped early by their last
    objective, then failures."""
    def present(value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value

    last = {row["trial_id"]: row for row in results.get_dataframe().to_dict("records")}
    best = {}
    if any("objective" in row for row in last.values()):
        best = {row["trial_id"]: present(row.get("objective")) for row in
                results.get_dataframe(filter_metric="objective", filter_mode="min").to_dict("records")}
    errored = {Path(r.path).name.removeprefix("trial-") for r in results if r.error is not None}
    rows = []
    for trial_id in sorted(set(last) | errored | {Path(r.path).name.removeprefix("trial-") for r in results}):
        metrics = {k: present(v) for k, v in last.get(trial_id, {}).items()}
        if metrics.get("step") is not None:  # a float column where another trial has no step
            metrics["step"] = int(metrics["step"])
        if trial_id in errored:
            status = "error"
        elif metrics.get("objective") is None:
            status = "no result"
        else:
            status = "finished" if (metrics.get("step") or 0) >= steps else "stopped early"
        run_name = f"runs/{trial_id}"
        starts = (storage.read_text(storage.join(experiment, run_name, "starts.jsonl")) or "").splitlines()
        rows.append({"trial": trial_id, "status": status, "step": metrics.get("step"),
                     "objective": metrics.get("objective"), **{name: metrics.get(name) for name in ERRORS},
                     **{name: metrics.get(f"config/{name}") for name in lambda_names},
                     **{name: metrics[name] for name in QUALITY if metrics.get(name) is not None},
                     "best_objective": best.get(trial_id), "starts": len(starts), "run_dir": run_name})
    rows.sort(key=lambda r: (STATUS_ORDER[r["status"]], r["objective"] if r["objective"] is not None else math.inf))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if kind == "lambda" else f"{value:.4g}"
    return str(value)


def write_table(rows: list[dict[str, Any]], out: Path, record: dict[str, Any], lambda_names: list[str]) -> None:
    columns = ["rank", "trial", "status", "step", "objective", *ERRORS, *lambda_names]
    columns += [q for q in QUALITY if any(q in r for r in rows)] + ["best_objective", "starts", "run_dir"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    target, provenance = record["target"], record["provenance"]
    shown = [c for c in columns if c not in ("run_dir", "starts")]
    lines = [f"# λ search `{record['name']}`", "",
             f"Preset `{record['options']['preset']}` (overrides: "
             f"{', '.join(f'{k}={v}' for k, v in record['options']['overrides'].items()) or 'none'}), "
             f"{record['steps_per_trial']} steps per trial at {record['config']['resolution']} px, "
             f"scheduler `{record['options']['scheduler']}`, search `{record['options']['searcher']}`, "
             f"{len(rows)} trials.", "",
             f"Objective: Euclidean distance of (image error, feature error), as fractions, to the target "
             f"{target['label']}: image {fmt(target['image'])}, feature {fmt(target['feature'])}. Errors: "
             f"‖a − b‖₂ / N in % on the first {record['options']['eval_images']} images of "
             f"`{record['config']['eval_data']}` (repro.evaluate), measured at every checkpoint.", "",
             "Space: " + ", ".join(f"{k} ∈ [{v['low']:.3g}, {v['high']:.3g}] (log; paper {PAPER_LAMBDAS[k]:g})"
                                   for k, v in record["space"].items()) + ".", "",
             *markdown_table([METRICS[c].title if c in METRICS else c for c in shown],
                             ([METRICS[c].cell(row.get(c)) if c in METRICS else
                               fmt(row.get(c), "lambda" if c.startswith("lambda_") else "") for c in shown]
                              for row in rows))]
    lines += ["", "Ranked: trials that ran the whole schedule by their final objective, then trials the scheduler "
              "stopped early by their last objective. `best_objective`: the lowest objective of any of the trial's "
              "checkpoints. The objective against each λ: `tensorboard --logdir EXPERIMENT` (Tune's logs).", "",
              "## Provenance", "",
              *[f"- {k}: `{v}`" for k, v in (("commit", provenance["commit"]),
                                             ("commands", " ; ".join(s["command"] for s in record["sessions"])),
                                             ("devices", ", ".join(record.get("devices", [])) or "–"),
                                             ("wall time (s)", record.get("wall_time_s")),
                                             ("data", json.dumps(provenance["data"])))]]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def preset_from(best: dict[str, Any], record: dict[str, Any], lambda_names: list[str]) -> dict[str, Any]:
    """The preset to add to repro.config.PRESETS: the searched preset's overrides with the best λ."""
    preset = dict(PRESETS[record["options"]["preset"]])
    for name in lambda_names:
        preset[name] = float(f"{best[name]:.3g}")
    return preset


def export(results, experiment: str, out: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Write results.csv, results.md, best.json, search.json and trial grids to `out`
    (a local folder; the experiment may be on a URI)."""
    out.mkdir(parents=True, exist_ok=True)
    elsewhere = storage.is_uri(experiment) or Path(experiment).resolve() != out.resolve()
    lambda_names = list(record["space"])
    rows = collect(results, experiment, lambda_names, record["steps_per_trial"])
    devices = set()
    for row in rows:
        provenance = storage.read_text(storage.join(experiment, row["run_dir"], "provenance.json"))
        if provenance is not None:
            devices.add(json.loads(provenance)["device"])
        # the trial's last grid in the format its code wrote (WebP; trials run before it: JPEG or PNG)
        grids = (storage.join(experiment, row["run_dir"], f"grid-latest{suffix}") for suffix in FIGURE_SUFFIXES)
        grid = next((grid for grid in grids if storage.exists(grid)), None) if elsewhere else None
        if grid is not None:
            (out / "grids").mkdir(exist_ok=True)
            fs, path = storage.filesystem(grid)
            with fs.open_input_stream(path) as src, open(out / "grids" / f"{row['trial']}{Path(path).suffix}", "wb") as dst:
                shutil.copyfileobj(src, dst)
    record["devices"] = sorted(devices)
    write_table(rows, out, record, lambda_names)
    best = rows[0] if rows and rows[0]["status"] in ("finished", "stopped early") else None
    summary = {"search": record["name"], "target": record["target"], "best": best,
               "preset": preset_from(best, record, lambda_names) if best else None,
               "paper_lambdas": {k: PAPER_LAMBDAS[k] for k in lambda_names},
               "provenance": record.get("provenance")}
    (out / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    if elsewhere:
        (out / "search.json").write_text(json.dumps(record, indent=2) + "\n")
    return rows

