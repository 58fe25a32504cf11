"""`python -m tune.search --preset NAME --target paper:fc6`: search the loss weights λ with Ray Tune.

Each trial is a short run of the one training loop (`repro.loop.train`, `tune.trial`); at every checkpoint
the loop's hook scores the model in memory on `--eval-images` images of the preset's `eval_data` (the
paper's normalised errors, with `repro.evaluate`'s functions, `tune.scoring`) and its `Session.report`
forwards metrics and checkpoint to `ray.tune.report`. The objective, minimised, is the Euclidean distance of
the trial's (image-space, feature-space) normalised errors, as fractions, to the target (`tune.target`): by
default the "AlexNet CONV5" row of the paper's Table 2 at the preset's layer (e.g. fc6 → 0.55 / 0.48).

Tune does the rest (`tune.tuner`): random sampling of the log-scale space of `tune.spaces`
(`BasicVariantGenerator`, or Optuna where installed), early stopping (ASHA, or Population Based Training
with `--scheduler pbt`, seeded by --seed), trial checkpoints (a trial Tune restarts, restores or exploits
resumes from `tune.get_checkpoint()`), `--resume` of an interrupted search (`Tuner.restore`), and the logs
TensorBoard plots (`tensorboard --logdir EXPERIMENT`: each metric over steps, the objective against each λ
in the HParams tab).

Folders (EXPERIMENT = STORAGE/NAME, default runs/tune/<preset>-<target>-<time>; STORAGE a path every node
mounts or a URI, kept as given, required on a multi-node cluster):
  EXPERIMENT/search.json       what was searched and how (read back by --resume), sessions, wall time
  EXPERIMENT/runs/<trial id>/  each trial's run folder, written wherever the trial runs: config.json,
                               stats.jsonl, grids, starts.jsonl (one line per start of the trial), provenance.json
  EXPERIMENT/<Tune trial dirs> Tune's results, TensorBoard logs and the trial's checkpoints (the only copy: the
                               loop stages each one on the node, Tune copies it here and keeps the newest 2,
                               under PBT a perturbation interval's + 2)
  EXPORT (default EXPERIMENT; runs/tune/NAME when that is a URI)
                               results.csv, results.md (best first), best.json (with the preset to add),
                               search.json (provenance) (`tune.export`)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from repro import storage
from repro.cluster.shipping import runtime_env
from repro.config import PRESETS, parse_overrides
from repro.errors import cli
from repro.provenance import git_commit
from tune.export import export
from tune.options import SCHEDULERS, SEARCHERS, SearchError, SearchOptions, build_config, reports_per_trial
from tune.spaces import space_for
from tune.target import Target, parse_target
from tune.tuner import new_search, restore_search

__all__ = ["SearchError", "Target", "main", "parse_args", "parse_target"]


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

    if ray.is_initialized():
        return False
    if args.address:
        ray.init(address=args.address, include_dashboard=False, runtime_env=runtime_env(args))
    else:
        ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count() or 1, include_dashboard=False)
    return True


def check_storage(args: argparse.Namespace, experiment: str) -> None:
    """On a multi-node cluster the experiment must be on a URI or an explicit --storage that every node sees."""
    import ray

    nodes = ray.nodes()
    storage.require_shared(experiment, nodes, args.storage is not None or args.resume is not None, args.address)
    storage.check_shared(storage.split(experiment)[0], nodes)


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    git_commit()  # pin the commit of the code now running
    command = "python -m tune.search " + " ".join(shlex.quote(a) for a in argv)
    args = parse_args(argv)  # SearchError, SpaceError, ConfigError: one line, exit 2 (`cli`)
    if args.resume is None:
        options = options_of(args)
        if args.dry_run:
            config = build_config(options)
            target = dataclasses.asdict(parse_target(options.target, config.layer))
            space = {k: dataclasses.asdict(r) for k, r in space_for(config, options.decades).items()}
            print(json.dumps({"config": config.to_dict(), "target": target, "space": space,
                              "reports_per_trial": reports_per_trial(config)}, indent=2))
            return 0

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
            tuner, experiment, record = new_search(options, root, name)
        session = {"command": command, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        record["sessions"].append(session)
        storage.write_text(storage.join(experiment, "search.json"), json.dumps(record, indent=2) + "\n")
        results = tuner.fit()
        session["wall_time_s"] = round(time.time() - started, 1)
        record["wall_time_s"] = round(sum(s.get("wall_time_s", 0) for s in record["sessions"]), 1)
        storage.write_text(storage.join(experiment, "search.json"), json.dumps(record, indent=2) + "\n")
        out = args.export or (Path("runs/tune") / record["name"] if storage.is_uri(experiment) else Path(experiment))
        rows = export(results, experiment, out.resolve(), record)
    finally:  # a user error (SearchError, StorageError, AssetError …) still reaches `cli` after this
        if started_ray:
            import ray

            ray.shutdown()
    if rows and rows[0]["objective"] is not None:
        best = rows[0]
        print(f"best trial {best['trial']} ({best['status']}): objective {best['objective']:.4g}, image error "
              f"{best['image_error_pct']:.1f} %, feature error {best['feature_error_pct']:.1f} %; "
              + ", ".join(f"{k}={best[k]:.3g}" for k in record["space"]))
    print(f"experiment {experiment}; table {out / 'results.md'}; plots: tensorboard --logdir {experiment}")
    failed = [r for r in rows if r["status"] in ("error", "no result")]
    return 1 if failed and len(failed) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
