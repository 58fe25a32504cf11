"""Tune's machinery for a search: scheduler, searcher, trainable and the Tuner of a new or resumed search."""
from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from repro import provenance, storage
from repro.cluster.shipping import ship_weights
from repro.config import Config, from_dict
from tune.options import SearchError, SearchOptions, build_config, reports_per_trial
from tune.spaces import LogRange, param_space, space_for
from tune.target import parse_target
from tune.trial import TrialSpec, run_trial


def make_scheduler(name: str, config: Config, space: dict[str, LogRange], seed: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    reports = reports_per_trial(config)
    if name == "asha":  # stop the worse half at every rung; the first rung after a quarter of the schedule
        return ASHAScheduler(time_attr="training_iteration", max_t=reports, grace_period=max(1, reports // 4),
                             reduction_factor=2)
    if name == "pbt":  # GAN training profits from changing weights on the way; exploit copies checkpoints
        import random

        import numpy as np

        # PBT draws its exploits and mutations from the driver's global `random` and `numpy.random` (Ray gives
        # it no seed argument): seed them, as Ray's docs advise, so a search with the same --seed perturbs alike.
        random.seed(seed)
        np.random.seed(seed)
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

    weights = ship_weights(from_dict(spec["config"])) if len(storage.alive_nodes(ray.nodes())) > 1 else []
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec, weights=weights), {"cpu": cpus, "gpu": gpus})


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: short, and named like the trial's run folder (runs/<trial id>)."""
    return f"trial-{trial.trial_id}"


def default_concurrency(options: SearchOptions) -> int:
    import ray

    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // max(options.cpus_per_trial, 1e-9))
    by_gpu = int(resources.get("GPU", 0) // options.gpus_per_trial) if options.gpus_per_trial > 0 else by_cpu
    return max(1, min(options.trials, by_cpu, by_gpu))


def new_search(options: SearchOptions, storage_root: str, name: str) -> tuple[Any, str, dict[str, Any]]:
    """A Tuner for a fresh search, its experiment folder, and the search record (search.json)."""
    from ray import tune

    from repro.evaluation import scores  # local: loads torch, which Tune's driver does not need otherwise

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
    _, _, eval_data = scores.load_eval_images(config, options.eval_images)  # checks the folder's sha256 once
    spec = TrialSpec(config=config.to_dict(), target=dataclasses.asdict(target), eval_images=options.eval_images,
                     image_metrics=options.image_metrics, search=name, runs_root=storage.join(experiment, "runs"))
    scheduler = make_scheduler(options.scheduler, config, space, options.seed)
    concurrent = options.concurrent or default_concurrency(options)
    searcher = make_searcher(options.searcher, options.seed, options.scheduler, concurrent)
    tuner = tune.Tuner(
        make_trainable(dataclasses.asdict(spec), options.cpus_per_trial, options.gpus_per_trial),
        param_space=param_space(space),
        tune_config=tune.TuneConfig(metric="objective", mode="min", num_samples=options.trials, search_alg=searcher,
                                    scheduler=scheduler,
                                    max_concurrent_trials=None if options.searcher == "random" else concurrent,
                                    reuse_actors=options.scheduler != "pbt", trial_dirname_creator=trial_dirname),
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
        "provenance": provenance.record(provenance.command("tune.search", sys.argv[1:]), run_config=config,
                                        data={**provenance.data(config), "eval_files": eval_data}),
        "sessions": [],
    }
    return tuner, experiment, record


def restore_search(experiment: str) -> tuple[Any, dict[str, Any]]:
    """A Tuner continuing an interrupted search: finished trials stay finished, unfinished ones resume
    from their last reported checkpoint, errored ones restart from theirs."""
    from ray import tune

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

