"""One trial: a short run of the one training loop with the trial's λ, reporting to Tune.

The loop's checkpoint hook scores the model in memory (`tune.scoring`); `Session.report`, called by the loop
at every checkpoint, adds the objective and hands metrics and checkpoint to `ray.tune.report`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repro import provenance as prov, storage
from repro.cluster.shipping import install_weights
from repro.config import Config, from_dict
from tune.options import SearchError
from tune.target import Target


@dataclass(frozen=True)
class TrialSpec:
    config: dict[str, Any]   # the resolved base Config (to_dict) every trial starts from; λ come on top
    target: dict[str, Any]   # Target fields
    eval_images: int         # n: the first n images of config.eval_data measure each checkpoint
    image_metrics: bool      # also PSNR/SSIM/MS-SSIM/LPIPS (reported beside the objective)
    search: str              # the experiment's name, for the trials' provenance
    runs_root: str           # EXPERIMENT/runs: where each trial's run folder goes (a path every node sees)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise SearchError(f"trial spec has keys {sorted(data)}, expected {sorted(names)}")
        return cls(**data)


def trial_config(params: dict[str, Any], spec: dict[str, Any]) -> tuple[TrialSpec, Config]:
    """Tune's dicts → (TrialSpec, typed Config with the trial's λ); unknown keys or wrong types fail loudly."""
    unknown = [k for k in params if not k.startswith("lambda_")]
    if unknown:
        raise SearchError(f"trial parameters {unknown} are not loss weights")
    typed = TrialSpec.from_dict(spec)
    return typed, from_dict({**typed.config, **params})


def run_trial(params: dict[str, Any], spec: dict[str, Any], weights: list[dict[str, Any]] | None = None) -> None:
    """Tune's function trainable: a short run of `repro.loop.train` with the trial's λ (`params`, sampled
    by Tune) on top of the search's base config (`spec`, the same for every trial); `weights`: the driver's
    weights files in Ray's object store, for nodes without them (repro.cluster.shipping.ship_weights)."""
    import shutil
    import tempfile

    import torch
    from ray import tune

    from repro import checkpoint  # local, with torch: the driver imports this module without loading torch
    from repro.loop import Session, train
    from tune.scoring import CheckpointScorer

    spec, config = trial_config(params, spec)
    config = install_weights(config, weights or [])
    if config.threads > 0:  # before anything builds a network: one trial = its CPU reservation
        torch.set_num_threads(config.threads)
    target = Target(**spec.target)
    context = tune.get_context()
    run = storage.join(spec.runs_root, context.get_trial_id())  # under the storage, whichever node runs the trial
    mirror = None
    if storage.is_uri(run):  # a node-local folder, uploaded after every report
        run_dir = Path(tempfile.mkdtemp(prefix="deepsim-trial-"))
        mirror = storage.Mirror(run_dir, run)
        mirror.pull("stats.jsonl", "metrics.csv", "starts.jsonl")
    else:
        run_dir = Path(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    # The loop writes each checkpoint here; Tune copies it into the trial's folder on the storage (the only
    # kept copy, bounded by CheckpointConfig.num_to_keep) and the staging copy is deleted.
    staging = Path(tempfile.mkdtemp(prefix="deepsim-checkpoints-"))

    resume_state = None
    restored = tune.get_checkpoint()
    if restored is not None:  # Tune restarted, restored (--resume) or, under PBT, exploited this trial
        with restored.as_directory() as folder:
            resume_state = checkpoint.load(Path(folder))
    started = time.time()
    lambdas = {k: v for k, v in params.items() if k.startswith("lambda_")}
    with open(run_dir / "starts.jsonl", "a") as f:  # one line per start: a finished trial has exactly one
        f.write(json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
                            "resumed_from_step": None if resume_state is None else int(resume_state["step"]),
                            **lambdas}) + "\n")

    scorer = CheckpointScorer(config, spec.eval_images, spec.image_metrics)
    provenance = prov.record(f"a trial of search {spec.search} (its command: search.json)", run_config=config,
                             device=prov.device(),
                             data={**prov.data(config), "eval_files": scorer.data},
                             search=spec.search, trial=context.get_trial_id(), lambdas=lambdas, target=spec.target,
                             resumed_from_step=None if resume_state is None else int(resume_state["step"]),
                             steps=None if resume_state is None else int(resume_state["step"]), wall_time_s=0.0)

    def write_provenance(step: int | None) -> None:
        # Before every report: Tune may stop the trial inside `tune.report` (ASHA, at max_t), so nothing
        # after the loop is sure to run.
        provenance.update(steps=step, wall_time_s=round(time.time() - started, 1))
        prov.write(run_dir, provenance)

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        write_provenance(int(metrics["step"]))
        if folder is None:  # the loop reports with a checkpoint on the one (main) worker
            tune.report(values)
            if mirror is not None:
                mirror.push()
            return
        # The checkpoint hook scored the model in memory just before this report.
        values["objective"] = target.distance(values["image_error_pct"] / 100, values["feature_error_pct"] / 100)
        if mirror is not None:
            mirror.push()
        try:
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:  # also when Tune stops the trial inside report
            shutil.rmtree(folder, ignore_errors=True)

    write_provenance(provenance["steps"])
    try:
        summary = train(config, run_dir, Session(report=report, resume_state=resume_state, show_progress=False,
                                                 checkpoint_dir=staging, checkpoint_hook=scorer))
        write_provenance(summary["step"])
        if mirror is not None:
            mirror.push()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if mirror is not None:
            shutil.rmtree(run_dir, ignore_errors=True)

