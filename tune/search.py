"""`python -m tune.search --preset NAME --target paper:fc6`: search the loss weights λ with Ray Tune.

Each trial is a short run of the one training loop (`repro.loop.train`); its `Session.report`, called by
the loop at every checkpoint, measures the checkpoint just written on `--eval-images` images of the
preset's `eval_data` (the paper's normalised errors, with `repro.evaluate`'s functions) and forwards
metrics and checkpoint to `ray.tune.report`. The objective, minimised, is the Euclidean distance of the
trial's (image-space, feature-space) normalised errors, as fractions, to the target: by default the
"AlexNet CONV5" row of the paper's Table 2 at the preset's layer (e.g. fc6 → 0.55 / 0.48).

Tune does the rest: random sampling of the log-scale space of `tune.spaces` (`BasicVariantGenerator`, or
Optuna where installed), early stopping (ASHA, or Population Based Training with `--scheduler pbt`),
trial checkpoints (a trial Tune restarts, restores or exploits resumes from `tune.get_checkpoint()`),
and `--resume` of an interrupted search (`Tuner.restore`).

Folders (EXPERIMENT = STORAGE/NAME, default runs/tune/<preset>-<target>-<time>; STORAGE a path every node
mounts or a URI, kept as given, required on a multi-node cluster):
  EXPERIMENT/search.json       what was searched and how (read back by --resume), sessions, wall time
  EXPERIMENT/runs/<trial id>/  each trial's run folder, written wherever the trial runs: config.json,
                               stats.jsonl, grids, starts.jsonl (one line per start of the trial), provenance.json
  EXPERIMENT/<Tune trial dirs> Tune's results and the trial's checkpoints (the only copy: the loop stages each
                               one on the node, Tune copies it here and keeps the newest 2, under PBT
                               a perturbation interval's + 2)
  EXPORT (default EXPERIMENT; runs/tune/NAME when that is a URI)
                               results.csv, results.md (best first), best.json (with the preset to add),
                               objective-vs-lambda.svg, search.json (provenance)
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from repro.config import Config, ConfigError, PRESETS, from_dict, make_config, parse_overrides
from tune.spaces import PAPER_LAMBDAS, LogRange, SpaceError, space_for

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE = REPO_ROOT / "results" / "paper_table2.json"
PAPER_ROW = "AlexNet CONV5"
# Table 2, row "AlexNet CONV5" (image / feature error in %), used when results/paper_table2.json is absent.
BUILTIN_TABLE2 = {"pool5": (43, 37), "fc6": (55, 48), "fc7": (61, 45), "fc8": (63, 29)}
LAYER_ALIASES = {"conv5": "pool5"}  # the paper calls pool5 "CONV5"
SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHERS = ("random", "optuna")
# Metrics of repro.evaluate.score shown beside the objective (those present are exported).
QUALITY = ("psnr", "ssim", "ms_ssim", "lpips", "nn_own_image_pct", "nn_own_feature_pct")


class SearchError(ValueError):
    """A search that cannot start or resume; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# The target and the objective
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the trial's normalised errors should land, as fractions (0.55 = 55 %); None = not scored."""

    image: float | None
    feature: float | None
    label: str

    def distance(self, image_error: float, feature_error: float) -> float:
        """Euclidean distance of (image_error, feature_error) (fractions) to the target's given parts."""
        parts = [(a - b) ** 2 for a, b in ((image_error, self.image), (feature_error, self.feature))
                 if b is not None]
        return math.sqrt(sum(parts))


def paper_targets() -> tuple[dict[str, tuple[float | None, float | None]], str]:
    """{tap: (image, feature)} as fractions from Table 2's "AlexNet CONV5" row, and where they came from."""
    if PAPER_TABLE.exists():
        table = json.loads(PAPER_TABLE.read_text())
        row = next((r for r in table["rows"] if r["name"] == PAPER_ROW), None)
        if row is None:
            raise SearchError(f"{PAPER_TABLE} has no row {PAPER_ROW!r}; restore the file or give --target image=…,feature=…")
        out = {}
        for column, tap in table["column_taps"].items():
            cell = row["cells"].get(column)
            if cell is not None:
                out[tap] = tuple(None if cell[k] is None else cell[k] / 100 for k in ("image", "feature"))
        return out, str(PAPER_TABLE.relative_to(REPO_ROOT))
    return {tap: (i / 100, f / 100) for tap, (i, f) in BUILTIN_TABLE2.items()}, "built-in copy of Table 2"


def parse_target(text: str, layer: str) -> Target:
    """`paper` (the preset's layer), `paper:fc6` (pool5/conv5/fc6/fc7/fc8) or `image=0.55,feature=0.48`."""
    text = text.strip()
    if text == "paper" or text.startswith("paper:"):
        tap = text.partition(":")[2].lower() or layer
        tap = LAYER_ALIASES.get(tap, tap)
        table, source = paper_targets()
        if tap not in table:
            raise SearchError(f"Table 2 has no {PAPER_ROW!r} cell for layer {tap!r}; choose from "
                              f"{', '.join('paper:' + t for t in table)} or give --target image=…,feature=…")
        image, feature = table[tap]
        return Target(image, feature, f"paper:{tap} ({PAPER_ROW} row of Table 2, {source})")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or key not in ("image", "feature"):
            raise SearchError(f"--target {text!r}: expected paper, paper:LAYER or image=F,feature=F")
        try:
            values[key] = float(raw)
        except ValueError as err:
            raise SearchError(f"--target {text!r}: {raw!r} is not a number") from err
        if not 0 <= values[key] <= 1.5:
            raise SearchError(f"--target {key}={raw}: give errors as fractions (0.55 for 55 %)")
    return Target(values.get("image"), values.get("feature"), text)


# ---------------------------------------------------------------------------------------------------
# What every trial receives (a plain dict in Tune's param_space; typed again on entry)
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# Measuring a checkpoint
# ---------------------------------------------------------------------------------------------------
class CheckpointScorer:
    """The paper's normalised errors (and image metrics) of a model state on n evaluation images.

    Built once per trial: its own copy of the model (so measuring never touches the training state),
    the evaluation images and their features, and the normalisers N. Uses `repro.evaluate`'s functions,
    so a trial's numbers are those `python -m repro.evaluate RUN_DIR --n n` gives for the same checkpoint.
    """

    def __init__(self, config: Config, n: int, image_metrics: bool, batch_size: int = 16):
        import torch

        from repro import evaluate
        from repro.comparators import build_comparator
        from repro.loop import build_parts, pick_device

        self.device = pick_device(config)
        self.batch_size = batch_size
        rng = torch.get_rng_state()  # building seeds torch; leave the caller's stream as it was
        self.model = build_parts(config, self.device).model.eval()
        if hasattr(self.model, "encode"):  # inversion: feature space = the encoder at the inverted layer
            self.encode = self.model.encode
        else:  # vae / autoencoder: feature space = the comparator at its tap
            comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                          config.comparator_weights or None, seed=config.seed).to(self.device)
            self.encode = comparator
        torch.set_rng_state(rng)
        images, _, self.data = evaluate.load_eval_images(config, n)
        features = evaluate.batched(self.encode, images, batch_size, self.device, "encode", False)
        self.reference = evaluate.make_reference(images, features)
        self.image_metrics: Callable[[Any, Any], dict[str, float]] = (
            evaluate.image_metric_fn(self.device, batch_size, False) if image_metrics else (lambda a, b: {}))

    def __call__(self, model_state: dict[str, Any]) -> dict[str, float]:
        from repro import evaluate

        from repro.loop import load_model_state

        load_model_state(self.model, model_state)  # checkpoints leave out the frozen encoder
        self.model.eval()
        reconstructions = evaluate.batched(lambda x: self.model(x)[0].clamp(0, 1), self.reference.images,
                                           self.batch_size, self.device, "reconstruct", False)
        features = evaluate.batched(self.encode, reconstructions, self.batch_size, self.device, "re-encode", False)
        return evaluate.score(self.reference, reconstructions, features, self.image_metrics)


# ---------------------------------------------------------------------------------------------------
# One trial: the one loop, reporting to Tune
# ---------------------------------------------------------------------------------------------------
def run_trial(params: dict[str, Any], spec: dict[str, Any], weights: list[dict[str, Any]] | None = None) -> None:
    """Tune's function trainable: a short run of `repro.loop.train` with the trial's λ (`params`, sampled
    by Tune) on top of the search's base config (`spec`, the same for every trial); `weights`: the driver's
    weights files in Ray's object store, for nodes without them (repro.train.ship_weights)."""
    import shutil
    import tempfile

    import torch
    from ray import tune

    from repro import checkpoint, storage
    from repro.loop import Session, train
    from repro.train import data_provenance, device_description, git_commit, install_weights, weights_provenance

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
    provenance = {
        "search": spec.search, "trial": context.get_trial_id(), "lambdas": lambdas, "target": spec.target,
        "commit": git_commit(), "data": {**data_provenance(config), "eval_files": scorer.data},
        "weights": weights_provenance(config), "device": device_description(),
        "resumed_from_step": None if resume_state is None else int(resume_state["step"]),
        "steps": None if resume_state is None else int(resume_state["step"]), "wall_time_s": 0.0,
    }

    def write_provenance(step: int | None) -> None:
        # Before every report: Tune may stop the trial inside `tune.report` (ASHA, at max_t), so nothing
        # after the loop is sure to run.
        provenance.update(steps=step, wall_time_s=round(time.time() - started, 1))
        (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        write_provenance(int(metrics["step"]))
        if folder is None:  # the loop reports with a checkpoint on the one (main) worker
            tune.report(values)
            if mirror is not None:
                mirror.push()
            return
        # The loop has just written (and hashed) this checkpoint: read it without hashing 100 MB again.
        state = torch.load(folder / checkpoint.STATE, map_location="cpu", weights_only=True)
        scores = scorer(state["model"])
        values.update(scores)
        values["objective"] = target.distance(scores["image_error_pct"] / 100, scores["feature_error_pct"] / 100)
        if mirror is not None:
            mirror.push()
        try:
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:  # also when Tune stops the trial inside report
            shutil.rmtree(folder, ignore_errors=True)

    write_provenance(provenance["steps"])
    try:
        summary = train(config, run_dir, Session(report=report, resume_state=resume_state, show_progress=False,
                                                 checkpoint_dir=staging))
        write_provenance(summary["step"])
        if mirror is not None:
            mirror.push()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if mirror is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# The search: Tune's machinery
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchOptions:
    preset: str
    overrides: dict[str, str]
    target: str                  # as given: paper | paper:LAYER | image=F,feature=F
    trials: int = 8              # Tune's num_samples
    scheduler: str = "asha"      # asha | pbt | fifo
    searcher: str = "random"     # random (BasicVariantGenerator) | optuna (if installed)
    decades: float | None = None  # None = the family's ranges; else ± decades around the preset's values
    eval_images: int = 16
    image_metrics: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrent: int | None = None  # max concurrent trials; None = what the resources allow
    seed: int = 0                # the searcher's random seed


def build_config(options: SearchOptions) -> Config:
    """The base config every trial starts from: preset ← overrides, sized to one trial's resources."""
    overrides = dict(options.overrides)
    overrides.setdefault("threads", str(max(1, int(options.cpus_per_trial))))
    if options.gpus_per_trial > 0:  # else the preset's device (auto: a trial without GPUs sees none and uses CPU)
        overrides.setdefault("device", "cuda")
    return make_config(options.preset, overrides)


def reports_per_trial(config: Config) -> int:
    """How often the loop reports (at every checkpoint and at the last step)."""
    return config.steps // config.checkpoint_every + (1 if config.steps % config.checkpoint_every else 0)


def make_scheduler(name: str, config: Config, space: dict[str, LogRange], seed: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    reports = reports_per_trial(config)
    if name == "asha":  # stop the worse half at every rung; the first rung after a quarter of the schedule
        return ASHAScheduler(time_attr="training_iteration", max_t=reports, grace_period=max(1, reports // 4),
                             reduction_factor=2)
    if name == "pbt":  # GAN training profits from changing weights on the way; exploit copies checkpoints
        from tune.spaces import param_space

        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=perturbation_interval(config),
                                       hyperparam_mutations=param_space(space), quantile_fraction=0.25,
                                       synch=False, require_attrs=True)
    return FIFOScheduler()


def perturbation_interval(config: Config) -> int:
    """PBT's perturbation interval, in reports (a quarter of the schedule)."""
    return max(1, reports_per_trial(config) // 4)


def checkpoints_kept(options: SearchOptions, config: Config) -> int:
    """Checkpoints Tune keeps per trial: 2; under PBT those of a whole perturbation interval + 2, since an
    exploiting trial restores the donor's checkpoint of the moment PBT decided, while the donor trains on
    (with 2, a restart slower than two of the donor's reports found it deleted: measured, results/cluster.md)."""
    return perturbation_interval(config) + 2 if options.scheduler == "pbt" else 2


def make_searcher(name: str, seed: int, scheduler: str, concurrent: int):
    if name == "optuna":
        if scheduler == "pbt":
            raise SearchError("--scheduler pbt samples and mutates by itself: use --search random with it")
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401
        except ImportError as err:
            raise SearchError("--search optuna needs optuna, which is not installed here; use --search random") from err
        return OptunaSearch(seed=seed)  # a Searcher: TuneConfig's max_concurrent_trials limits it
    from ray.tune.search import BasicVariantGenerator

    # A SearchGenerator ignores TuneConfig's max_concurrent_trials: it takes the limit itself.
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)


def make_trainable(spec: dict[str, Any], cpus: float, gpus: float):
    """run_trial with the search's fixed spec bound (Tune's object store) and one trial's resources; on a
    multi-node cluster also the weights files the trials read (sha256-checked on each node)."""
    import ray
    from ray import tune

    from repro import storage
    from repro.train import ship_weights

    # Imported by name so that Tune pickles a reference to tune.search.run_trial, never a copy of __main__.
    from tune.search import run_trial as trial

    weights = ship_weights(from_dict(spec["config"])) if len(storage.alive_nodes(ray.nodes())) > 1 else []
    return tune.with_resources(tune.with_parameters(trial, spec=spec, weights=weights), {"cpu": cpus, "gpu": gpus})


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: short, and named like the trial's run folder (runs/<trial id>)."""
    return f"trial-{trial.trial_id}"


def default_concurrency(options: SearchOptions) -> int:
    import ray

    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // max(options.cpus_per_trial, 1e-9))
    by_gpu = int(resources.get("GPU", 0) // options.gpus_per_trial) if options.gpus_per_trial > 0 else by_cpu
    return max(1, min(options.trials, by_cpu, by_gpu))


def new_search(options: SearchOptions, storage_root: str, name: str, command: str) -> tuple[Any, str, dict[str, Any]]:
    """A Tuner for a fresh search, its experiment folder, and the search record (search.json)."""
    from ray import tune

    from repro import evaluate, storage
    from repro.train import data_provenance, git_commit, weights_provenance
    from tune.spaces import param_space

    config = build_config(options)
    space = space_for(config, options.decades)
    target = parse_target(options.target, config.layer)
    if target.label.startswith("paper:") and not target.label.startswith(f"paper:{config.layer} "):
        print(f"warning: the target is Table 2 at {target.label.split()[0]}, but preset {config.preset!r} inverts "
              f"{config.layer}; the trials' errors are measured at {config.layer}", file=sys.stderr)
    experiment = storage.join(storage_root, name)
    if storage.exists(storage.join(experiment, "search.json")):
        raise SearchError(f"{experiment} already holds a search: continue it with --resume {experiment} "
                          "or choose another --name")
    _, _, eval_data = evaluate.load_eval_images(config, options.eval_images)  # checks the folder's sha256 once
    spec = TrialSpec(config=config.to_dict(), target=dataclasses.asdict(target), eval_images=options.eval_images,
                     image_metrics=options.image_metrics, search=name, runs_root=storage.join(experiment, "runs"))
    scheduler = make_scheduler(options.scheduler, config, space, options.seed)
    concurrent = options.concurrent or default_concurrency(options)
    from tune.search import trial_dirname as dirname  # by reference, for the pickled Tuner

    searcher = make_searcher(options.searcher, options.seed, options.scheduler, concurrent)
    tuner = tune.Tuner(
        make_trainable(dataclasses.asdict(spec), options.cpus_per_trial, options.gpus_per_trial),
        param_space=param_space(space),
        tune_config=tune.TuneConfig(metric="objective", mode="min", num_samples=options.trials, search_alg=searcher,
                                    scheduler=scheduler,
                                    max_concurrent_trials=None if options.searcher == "random" else concurrent,
                                    reuse_actors=options.scheduler != "pbt", trial_dirname_creator=dirname),
        run_config=tune.RunConfig(name=name, storage_path=storage_root,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints_kept(options, config)),
                                  failure_config=tune.FailureConfig(max_failures=1), verbose=1),
    )
    record = {
        "name": name,
        "options": dataclasses.asdict(options),
        "target": dataclasses.asdict(target),
        "space": {k: {"low": r.low, "high": r.high, "scale": "log"} for k, r in space.items()},
        "config": config.to_dict(),
        "trial_spec": dataclasses.asdict(spec),
        "steps_per_trial": config.steps,
        "reports_per_trial": reports_per_trial(config),
        "max_concurrent_trials": concurrent,
        "provenance": {
            "commit": git_commit(),
            "data": {**data_provenance(config), "eval_files": eval_data},
            "weights": weights_provenance(config),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "sessions": [],
    }
    return tuner, experiment, record


def restore_search(experiment: str) -> tuple[Any, dict[str, Any]]:
    """A Tuner continuing an interrupted search: finished trials stay finished, unfinished ones resume
    from their last reported checkpoint, errored ones restart from theirs."""
    from ray import tune

    from repro import storage

    text = storage.read_text(storage.join(experiment, "search.json"))
    if text is None:
        raise SearchError(f"{experiment} is not a search folder (no search.json): give EXPERIMENT = STORAGE/NAME "
                          "of a search started by python -m tune.search")
    if not tune.Tuner.can_restore(experiment):
        raise SearchError(f"{experiment} holds no Tune experiment state yet (it was stopped before Tune saved "
                          "any): start the search again")
    record = json.loads(text)
    options = record["options"]
    spec = {**record["trial_spec"], "runs_root": storage.join(experiment, "runs")}  # the folder may have moved
    trainable = make_trainable(spec, options["cpus_per_trial"], options["gpus_per_trial"])
    tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                               restart_errored=True)
    return tuner, record


# ---------------------------------------------------------------------------------------------------
# Export: table (CSV + Markdown, best first), best.json, the plot
# ---------------------------------------------------------------------------------------------------
STATUS_ORDER = {"finished": 0, "stopped early": 1, "error": 2, "no result": 3}


def collect(results, experiment: str, lambda_names: list[str], steps: int) -> list[dict[str, Any]]:
    """One row per trial from Tune's ResultGrid, ranked: trials that ran the whole schedule by their final
    objective, then trials the scheduler stopped early by their last objective, then failures."""
    from repro import storage

    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name.removeprefix("trial-")
        history = result.metrics_dataframe
        best = None
        if history is not None and "objective" in history:
            objective_history = history["objective"].dropna()
            best = float(objective_history.min()) if len(objective_history) else None
        if result.error is not None:
            status = "error"
        elif "objective" not in metrics:
            status = "no result"
        else:
            status = "finished" if int(metrics.get("step", 0)) >= steps else "stopped early"
        run_name = f"runs/{metrics.get('trial_id', trial_id)}"
        starts = (storage.read_text(storage.join(experiment, run_name, "starts.jsonl")) or "").splitlines()
        row = {"trial": trial_id, "status": status, "step": metrics.get("step"),
               "objective": metrics.get("objective"),
               "image_error_pct": metrics.get("image_error_pct"), "feature_error_pct": metrics.get("feature_error_pct"),
               **{name: config.get(name) for name in lambda_names},
               **{name: metrics.get(name) for name in QUALITY if name in metrics},
               "best_objective": best, "starts": len(starts),
               "run_dir": run_name}
        rows.append(row)
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
    columns = ["rank", "trial", "status", "step", "objective", "image_error_pct", "feature_error_pct", *lambda_names]
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
             "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c), "lambda" if c.startswith("lambda_") else "") for c in shown) + " |")
    lines += ["", "Ranked: trials that ran the whole schedule by their final objective, then trials the scheduler "
              "stopped early by their last objective. `best_objective`: the lowest objective of any of the trial's "
              "checkpoints.", "", "![objective against each λ](objective-vs-lambda.svg)", "",
              "## Provenance", "",
              *[f"- {k}: `{v}`" for k, v in (("commit", provenance["commit"]),
                                             ("commands", " ; ".join(s["command"] for s in record["sessions"])),
                                             ("devices", ", ".join(record.get("devices", [])) or "–"),
                                             ("wall time (s)", record.get("wall_time_s")),
                                             ("data", json.dumps(provenance["data"])))]]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def svg_plot(rows: list[dict[str, Any]], space: dict[str, dict[str, float]], target_label: str) -> str:
    """The objective of every trial against each λ (log x axis), one panel per λ, written as SVG by hand
    (matplotlib is not a dependency). The best trial is red, the paper's value a dashed line."""
    width, height, margin = 300, 240, (52, 20, 30, 46)  # panel size; left, right, top, bottom margins
    points = [r for r in rows if r.get("objective") is not None]
    values = [float(r["objective"]) for r in points] or [0.0, 1.0]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) if high > low else 0.05 * max(abs(high), 1e-3)
    y0, y1 = low - pad, high + pad
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(space)}" height="{height + 24}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="6" y="14" font-size="12">objective (distance to {escape(target_label)}) against each λ; '
           'red = best trial, dashed = paper</text>']
    best = rows[0] if rows and rows[0].get("objective") is not None else None
    for i, (name, bounds) in enumerate(space.items()):
        ox, oy = i * width, 24
        left, right, top, bottom = margin
        pw, ph = width - left - right, height - top - bottom
        lx0, lx1 = math.log10(bounds["low"]), math.log10(bounds["high"])

        def sx(v: float) -> float:
            return ox + left + (math.log10(v) - lx0) / (lx1 - lx0) * pw

        def sy(v: float) -> float:
            return oy + top + (1 - (v - y0) / (y1 - y0)) * ph

        out.append(f'<rect x="{ox + left}" y="{oy + top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        out.append(f'<text x="{ox + left + pw / 2}" y="{oy + height - 8}" text-anchor="middle">{name} (log)</text>')
        for decade in range(math.ceil(lx0 - 1e-9), math.floor(lx1 + 1e-9) + 1):
            x = sx(10.0**decade)
            out.append(f'<line x1="{x:.1f}" y1="{oy + top + ph}" x2="{x:.1f}" y2="{oy + top + ph + 4}" stroke="#444"/>')
            out.append(f'<text x="{x:.1f}" y="{oy + top + ph + 16}" text-anchor="middle">1e{decade}</text>')
        for k in range(5):
            v = y0 + k * (y1 - y0) / 4
            out.append(f'<text x="{ox + left - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        paper = PAPER_LAMBDAS.get(name)
        if paper is not None and bounds["low"] <= paper <= bounds["high"]:
            out.append(f'<line x1="{sx(paper):.1f}" y1="{oy + top}" x2="{sx(paper):.1f}" y2="{oy + top + ph}" '
                       'stroke="#888" stroke-dasharray="4,3"/>')
        for row in points:
            if row.get(name) is None:
                continue
            colour = "#d62728" if row is best else ("#1f77b4" if row["status"] == "finished" else "#9ecae1")
            out.append(f'<circle cx="{sx(float(row[name])):.1f}" cy="{sy(float(row["objective"])):.1f}" r="4" '
                       f'fill="{colour}"><title>{escape(str(row["trial"]))}: {float(row["objective"]):.4g}</title></circle>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def preset_from(best: dict[str, Any], record: dict[str, Any], lambda_names: list[str]) -> dict[str, Any]:
    """The preset to add to repro.config.PRESETS: the searched preset's overrides with the best λ."""
    preset = dict(PRESETS[record["options"]["preset"]])
    for name in lambda_names:
        preset[name] = float(f"{best[name]:.3g}")
    return preset


def export(results, experiment: str, out: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Write results.csv, results.md, best.json, objective-vs-lambda.svg, search.json and trial grids to `out`
    (a local folder; the experiment may be on a URI)."""
    from repro import storage

    out.mkdir(parents=True, exist_ok=True)
    elsewhere = storage.is_uri(experiment) or Path(experiment).resolve() != out.resolve()
    lambda_names = list(record["space"])
    rows = collect(results, experiment, lambda_names, record["steps_per_trial"])
    devices = set()
    for row in rows:
        provenance = storage.read_text(storage.join(experiment, row["run_dir"], "provenance.json"))
        if provenance is not None:
            devices.add(json.loads(provenance)["device"])
        grid = storage.join(experiment, row["run_dir"], "grid-latest.png")
        if elsewhere and storage.exists(grid):
            (out / "grids").mkdir(exist_ok=True)
            fs, path = storage.filesystem(grid)
            with fs.open_input_stream(path) as src, open(out / "grids" / f"{row['trial']}.png", "wb") as dst:
                shutil.copyfileobj(src, dst)
    record["devices"] = sorted(devices)
    write_table(rows, out, record, lambda_names)
    (out / "objective-vs-lambda.svg").write_text(svg_plot(rows, record["space"], record["target"]["label"]))
    best = rows[0] if rows and rows[0]["status"] in ("finished", "stopped early") else None
    summary = {"search": record["name"], "target": record["target"], "best": best,
               "preset": preset_from(best, record, lambda_names) if best else None,
               "paper_lambdas": {k: PAPER_LAMBDAS[k] for k in lambda_names},
               "provenance": record.get("provenance")}
    (out / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    if elsewhere:
        (out / "search.json").write_text(json.dumps(record, indent=2) + "\n")
    return rows


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tune.search", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small-pool5", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field for every trial (repeatable), e.g. --set steps=60")
    parser.add_argument("--target", default="paper",
                        help="paper (Table 2 at the preset's layer), paper:LAYER (pool5/conv5/fc6/fc7/fc8) or "
                             "image=F,feature=F as fractions (default: paper)")
    parser.add_argument("--trials", type=int, default=8, help="number of λ samples (Tune's num_samples)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                        help="asha: early stopping; pbt: population based training; fifo: none")
    parser.add_argument("--search", dest="searcher", choices=SEARCHERS, default="random",
                        help="random (Tune's BasicVariantGenerator) or optuna (needs optuna installed)")
    parser.add_argument("--decades", type=float, help="search ± this many decades around the preset's λ "
                                                      "(default: the family's ranges in tune/spaces.py)")
    parser.add_argument("--eval-images", type=int, default=16, help="evaluation images measuring each checkpoint")
    parser.add_argument("--no-image-metrics", action="store_true", help="only the normalised errors (no PSNR/SSIM/LPIPS)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial (= torch threads)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs per trial (fractions share a GPU); > 0 trains on CUDA, else the preset's device "
                             "(auto: CPU, since a trial without GPUs sees none)")
    parser.add_argument("--concurrent", type=int, help="max trials at a time (default: what the resources allow)")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray runtime)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray runtime (default: all cores)")
    parser.add_argument("--storage", metavar="PATH_OR_URI",
                        help="where experiments go (default runs/tune): a path every node mounts or a URI pyarrow "
                             "reads (s3://…, gs://…), kept as given; required on a multi-node cluster")
    parser.add_argument("--name", help="experiment name (default: <preset>-<target>-<UTC time>)")
    parser.add_argument("--resume", metavar="EXPERIMENT", help="continue an interrupted search (a path or a URI)")
    parser.add_argument("--export", type=Path, metavar="DIR", help="where tables and plot go (default: EXPERIMENT, "
                                                                   "or runs/tune/NAME when that is a URI)")
    parser.add_argument("--seed", type=int, default=0, help="the searcher's random seed")
    parser.add_argument("--dry-run", action="store_true", help="print the base config, space and target, then exit")
    return parser.parse_args(argv)


def options_of(args: argparse.Namespace) -> SearchOptions:
    for name, low in (("trials", 1), ("eval_images", 2)):
        if getattr(args, name) < low:
            raise SearchError(f"--{name.replace('_', '-')} must be ≥ {low}, got {getattr(args, name)}")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise SearchError("--cpus-per-trial must be > 0 and --gpus-per-trial ≥ 0")
    if args.concurrent is not None and args.concurrent < 1:
        raise SearchError(f"--concurrent must be ≥ 1, got {args.concurrent}")
    return SearchOptions(preset=args.preset, overrides=parse_overrides(args.overrides), target=args.target,
                         trials=args.trials, scheduler=args.scheduler, searcher=args.searcher, decades=args.decades,
                         eval_images=args.eval_images, image_metrics=not args.no_image_metrics,
                         cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                         concurrent=args.concurrent, seed=args.seed)


def start_ray(args: argparse.Namespace) -> bool:
    """Connect to `--address` (shipping the code, as repro.train does) or start a local runtime; True if
    this call started it."""
    import ray

    from repro.train import runtime_env

    if ray.is_initialized():
        return False
    if args.address:
        ray.init(address=args.address, include_dashboard=False, runtime_env=runtime_env(args))
    else:
        ray.init(num_cpus=args.num_cpus or os.cpu_count() or 1, include_dashboard=False)
    return True


def check_storage(args: argparse.Namespace, experiment: str) -> None:
    """On a multi-node cluster the experiment must be on a URI or an explicit --storage that every node sees."""
    import ray

    from repro import storage

    nodes = ray.nodes()
    storage.require_shared(experiment, nodes, args.storage is not None or args.resume is not None, args.address)
    storage.check_shared(storage.split(experiment)[0], nodes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from repro.train import git_commit

    git_commit()  # pin the commit of the code now running
    command = "python -m tune.search " + " ".join(shlex.quote(a) for a in argv)
    try:
        args = parse_args(argv)
        if args.resume is None:
            options = options_of(args)
            if args.dry_run:
                config = build_config(options)
                print(json.dumps({"config": config.to_dict(), "target": dataclasses.asdict(parse_target(options.target, config.layer)),
                                  "space": {k: dataclasses.asdict(r) for k, r in space_for(config, options.decades).items()},
                                  "reports_per_trial": reports_per_trial(config)}, indent=2))
                return 0
    except (SearchError, SpaceError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from repro import storage
    from repro.assets import AssetError

    started = time.time()
    started_ray = start_ray(args)
    try:
        if args.resume is not None:
            experiment = storage.normalise(args.resume)
            check_storage(args, experiment)
            tuner, record = restore_search(experiment)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            name = args.name or f"{options.preset}-{options.target.replace(':', '-').replace(',', '-')}-{stamp}"
            root = storage.normalise(args.storage or "runs/tune")  # a URI stays exactly as given
            check_storage(args, storage.join(root, name))
            tuner, experiment, record = new_search(options, root, name, command)
        session = {"command": command, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        record["sessions"].append(session)
        storage.write_text(storage.join(experiment, "search.json"), json.dumps(record, indent=2) + "\n")
        results = tuner.fit()
        session["wall_time_s"] = round(time.time() - started, 1)
        record["wall_time_s"] = round(sum(s.get("wall_time_s", 0) for s in record["sessions"]), 1)
        storage.write_text(storage.join(experiment, "search.json"), json.dumps(record, indent=2) + "\n")
        out = args.export or (Path("runs/tune") / record["name"] if storage.is_uri(experiment) else Path(experiment))
        rows = export(results, experiment, out.resolve(), record)
    except (SearchError, SpaceError, ConfigError, storage.StorageError, AssetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    if rows and rows[0]["objective"] is not None:
        best = rows[0]
        print(f"best trial {best['trial']} ({best['status']}): objective {best['objective']:.4g}, image error "
              f"{best['image_error_pct']:.1f} %, feature error {best['feature_error_pct']:.1f} %; "
              + ", ".join(f"{k}={best[k]:.3g}" for k in record["space"]))
    print(f"experiment {experiment}; table {out / 'results.md'}, plot {out / 'objective-vs-lambda.svg'}")
    failed = [r for r in rows if r["status"] in ("error", "no result")]
    return 1 if failed and len(failed) == len(rows) else 0


if __name__ == "__main__":
    # Run the module under its import name, so that Tune pickles references to tune.search, not __main__.
    from tune.search import main as _main

    sys.exit(_main())
