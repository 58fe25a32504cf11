"""A run's small, reviewable artefacts copied into `results/` (`publish`, behind `python -m repro.publish`).

Run folders under `runs/` hold checkpoints (tens of MB) and stay out of git. What a reader needs —
config, provenance (command, commit, data and weights sha256, device, steps, wall time), training
statistics, the latest and a few intermediate grids, and evaluation metrics/figures when present — is
copied to `results/<preset>/<run name>/` so every committed number points back to the command that made it.
`generator=True` (`--generator`) also writes the trained generator alone as `generator.pt`
(`repro.generator_file`: G's weights, its architecture, the encoder name/tap it inverts, sha256), for
`python -m repro.invert` and `python -m repro.synthesize`; `half` (`--half`) stores it in float16. Figures of a
run trained before they were WebP (JPEG or PNG) are re-encoded on the way (`compress_figures`), so that what is
committed stays small.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from repro.assets import REPO_ROOT
from repro.provenance import command
from repro.reporting.compress_figures import compress_figures
from repro.runs import export_run, run_config

# provenance.json holds the run's config too, so the published folder needs no separate config.json.
FILES = ("provenance.json", "stats.jsonl", "metrics.csv",
         "grid-latest.webp", "grid-latest.jpg", "grid-latest.png")  # .jpg, .png: runs trained before WebP figures


def publish(run_dir: Path, dest: Path | None = None, grids: int = 2, generator: bool = False,
            half: bool = False) -> Path:
    preset = run_config(run_dir, finished=True)["preset"]
    dest = dest or REPO_ROOT / "results" / preset / run_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
    steps = sorted((run_dir / "grids").glob("step-*"), key=lambda p: p.stem)[:-1]  # the last one is grid-latest
    if steps and grids > 0:  # a few grids spread over the run before its end
        picks = {steps[round(i * (len(steps) - 1) / max(1, grids - 1))] for i in range(grids)}
        (dest / "grids").mkdir(exist_ok=True)
        for path in sorted(picks):
            shutil.copy2(path, dest / "grids" / path.name)
    if (run_dir / "eval").is_dir():
        shutil.copytree(run_dir / "eval", dest / "eval", dirs_exist_ok=True)
    if generator:
        export_run(run_dir, dest / "generator.pt", half=half)
    compress_figures(dest, command("repro.publish", [str(run_dir), str(dest)]))
    return dest
