"""`python -m repro.train`: resolve a config, check its inputs, make the run folder, launch the one loop.

Launchers:
- `--launcher ray` (default): Ray Train's `TorchTrainer`, a local Ray runtime unless `--address` names a
  cluster; `--num-workers` data-parallel workers (gloo on CPU, NCCL with `--gpu`); metrics and
  checkpoints go through `ray.train.report`; a worker that dies is restarted from the last registered
  checkpoint (`--max-failures`). The run folder is Ray's experiment folder on `--storage` (a path every
  node mounts, or a URI): rank 0 writes the logs there wherever it runs, Ray the checkpoints.
  Resuming (a restart, `--resume`) cannot diverge: rank 0 alone chooses the checkpoint — Ray's registered one,
  the --resume one, or a newer complete one in the run folder Ray had not registered yet — and broadcasts its
  choice; every worker loads that very one (step and sha256 checked) or every worker stops with the same error
  (`agreed_resume`). The loop then broadcasts rank 0's G and D to all workers, and each worker draws its own
  dropout/noise stream (seed + rank), saved per worker in every checkpoint; data sharding is by rank as before.
  All of it lives in `repro.cluster` (what travels to the nodes, the cluster checks, the worker function).
- `--launcher local`: the very same loop in this process, without Ray (debugging; machines without Ray):
  `launch_local`, here.

Every run folder holds config.json, provenance.json (command, commit, data and weights sha256, device,
steps, wall time), stats.jsonl / metrics.csv / TensorBoard, image grids and checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from repro import checkpoint as ckpt
from repro import precision, provenance, storage
from repro.cluster.launcher import connect_ray, cpus_per_worker, launch_ray
from repro.comparators import NETS, build_net
from repro.config import Config, ConfigError, PRESETS, from_dict, make_config, parse_overrides
from repro.data import listing, require_one_batch, resolve_folder, resolve_source
from repro.devices import pick_device
from repro.errors import DeepsimError, cli, report, user_input
from repro.grids import FIGURE_SUFFIX
from repro.loop import NonFiniteLoss, Session, train
from repro.losses import minimum_side
from repro.needs import nets_used
from repro.plan import SAME_SHAPES, describe, estimate_lines, measure_step, resource_plan
from repro.runs import CONFIG_FILE, run_config

log = logging.getLogger("repro.train")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m repro.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (default conv5star-warm; a resumed run keeps its own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set steps=100")
    parser.add_argument("--storage", metavar="PATH_OR_URI",
                        help="where run folders go (default: runs): a path every node mounts, or a URI pyarrow "
                             "reads (s3://…, gs://…); required on a multi-node cluster")
    parser.add_argument("--run-dir", help="run folder (default: STORAGE/<preset>/<timestamp>); relative to --storage "
                                          "when that is given")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run (a path or a URI) from its last checkpoint")
    parser.add_argument("--launcher", choices=("ray", "local"), default="ray")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray runtime)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train data-parallel workers")
    parser.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs (= torch threads) per Ray worker (default: a local "
                        "runtime's cores shared out among the workers; 1 on a cluster)")
    parser.add_argument("--max-failures", type=int, default=2, help="worker failures Ray recovers from")
    parser.add_argument("--precision", choices=list(precision.PRECISIONS),
                        help="the speed path: fp32 (eager fp32 NCHW), bf16 (autocast of the forward passes) or "
                             "channels_last+bf16; = --set amp=… --set channels_last=…, each equal to fp32 within the "
                             "tolerances of tests/test_fast_paths.py (default: the preset's, else the device's "
                             "fastest, repro.precision: channels_last+bf16 on a CPU or GPU with bf16, else fp32)")
    parser.add_argument("--dry-run", action="store_true", help="check the inputs, print the resolved config, the "
                        "resource plan and a time estimate from a few measured steps, and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument("--verbose", action="store_true", help="also Ray's and Ray Train's INFO lines (resources, "
                        "workers with their ranks and pids, every checkpoint), which stay in Ray's log files otherwise")
    return parser.parse_args(argv)


def run_location(args: argparse.Namespace, preset: str) -> str:
    """The run folder as a path (absolute) or a URI (as given): --resume, else STORAGE/RUN_DIR, else
    STORAGE/<preset>/<timestamp> (STORAGE defaults to runs)."""
    if args.resume is not None:
        return storage.normalise(args.resume)
    if args.storage is not None and args.run_dir is not None:
        if storage.is_uri(args.run_dir) or Path(args.run_dir).is_absolute():
            raise ConfigError(f"--run-dir {args.run_dir} with --storage must be relative to the storage (or leave "
                              "--storage out)")
        return storage.join(storage.normalise(args.storage), args.run_dir)
    if args.run_dir is not None:
        return storage.normalise(args.run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return storage.join(storage.normalise(args.storage or "runs"), preset, stamp)


def resolve(args: argparse.Namespace) -> tuple[Config, str]:
    if getattr(args, "precision", None):
        fields = precision.PRECISIONS[args.precision]
        given = {item.partition("=")[0].strip() for item in args.overrides}
        if given & set(fields):
            raise ConfigError(f"--precision {args.precision} sets {' and '.join(fields)}; "
                              f"leave out --set {', '.join(sorted(given & set(fields)))}")
        args.overrides = [f"{k}={str(v).lower()}" for k, v in fields.items()] + args.overrides

    if args.resume is not None:
        run = run_location(args, "")
        base = from_dict(run_config(run))
        overrides = parse_overrides(args.overrides)
        if args.preset is not None and args.preset != base.preset:
            raise ConfigError(f"{args.resume} is a {base.preset!r} run, not {args.preset!r}; leave --preset out "
                              "when resuming (the run keeps its own config.json)")
        data = base.to_dict()
        data.update(overrides)
        resumed = from_dict(data)
        ckpt.check_resumable(base, resumed)
        return resumed, run
    config = make_config(args.preset or "conv5star-warm", parse_overrides(args.overrides))
    return config, run_location(args, config.preset)


def check_config(config: Config, world_size: int = 1) -> None:
    """What a config names, checked before any run folder exists (also by --dry-run): the image folders and
    one batch of training images, the networks and their taps, the weights files (read now: a file that is
    not weights fails here, not in a worker), and the resolution each network and D can take. Raises
    ValueError (ConfigError, DataError, ConversionError), FileNotFoundError or AssetError."""
    for folder in (config.train_data, config.eval_data):
        resolve_folder(folder, verify=False)
    # fewer images than one batch: every epoch would be empty and the loader would wait forever
    require_one_batch(listing(resolve_source(config.train_data)), config.train_data, config.batch_size, world_size)
    for use in nets_used(config):  # the one rule of what a config builds; a VAE's trunk is read past any tap
        if not use.tap:
            continue
        role, name, weights, tap = use.role, use.name, use.weights, use.tap
        if name not in NETS:
            raise ConfigError(f"{role}={name!r} is not a known network; choose from {', '.join(NETS)}")
        if weights or name in ("caffenet", "videonet", "onnx", "squeezenet"):  # read files now, not in a worker
            net, device = build_net(name, config.resolution, weights or None), "cpu"
        else:  # shapes alone: the same architecture on the meta device (no weights read, nothing allocated)
            with torch.device("meta"):
                net, device = build_net(SAME_SHAPES.get(name, name), config.resolution, seed=config.seed), "meta"
        if tap not in net.taps:
            raise ConfigError(f"{role} tap {tap!r} does not exist in {name}; choose from {', '.join(net.taps)}")

        def features(images: torch.Tensor, net=net, tap=tap) -> torch.Tensor:
            return net(net.transform(images), tap=tap)

        try:
            with torch.no_grad():
                features(torch.zeros(1, 3, config.resolution, config.resolution, device=device))
        except RuntimeError as err:  # its pooling shrinks the map to nothing
            smallest = minimum_side(features, device)
            raise ConfigError(f"resolution={config.resolution} is too small for the {role} {name}:{tap}"
                              + (f": it needs at least {smallest} px" if smallest else f" ({err})")) from None


def check_inputs(config: Config, args: argparse.Namespace, run: str) -> None:
    """`check_config`, then the run folder: a new run needs an empty (or new) folder, and a --resume folder an
    intact checkpoint of this very config. Raises ValueError (ConfigError, DataError, ConversionError),
    FileNotFoundError or AssetError."""
    check_config(config, args.num_workers)
    if args.resume is None and storage.has_content(run):
        # A new run in an old folder would overwrite its config, interleave two runs' stats and leave its
        # checkpoints beside the old ones (which a later --resume would pick); Ray would silently continue it.
        raise ConfigError(f"run folder {run} is not empty: continue that run with --resume {run}, or choose "
                          "another --run-dir")
    if args.resume is not None and storage.is_uri(run):
        return  # Ray's registry on the storage is what the workers resume from; they check its checksum
    if args.resume is not None:
        run_dir = Path(run)
        found = ckpt.load_latest(run_dir / "checkpoints")
        if found is None:
            raise ConfigError(f"{run_dir} has no intact checkpoint to resume from; start a new run instead")
        ckpt.check_resume_checkpoint(*found, config, run_dir / CONFIG_FILE)
        args.resume_from = found  # the local launcher need not read it twice


def launch_local(config: Config, run: str, args: argparse.Namespace) -> dict[str, Any]:
    """The one loop in this process (`--launcher local`), from the checkpoint `check_inputs` found when resuming."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    run_dir = Path(run)

    resume_state = None
    if args.resume is not None:
        found = getattr(args, "resume_from", None) or ckpt.load_latest(run_dir / "checkpoints")
        if found is None:
            raise ckpt.CheckpointError(f"no intact checkpoint under {run_dir / 'checkpoints'} to resume from")
        log.info("resuming from %s", found[0])
        resume_state = found[1]
    return train(config, run_dir, Session(resume_state=resume_state, show_progress=not args.no_progress))


def final_step(result: dict[str, Any]) -> int | None:
    """The last step a launch reached: the local loop's summary, or Ray's last reported metrics."""
    step = result.get("step", (result.get("metrics") or {}).get("step"))
    return None if step is None else int(step)


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    provenance.git_commit()  # pin the commit of the code now running (see git_commit)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    for flag, value in (("--num-workers", args.num_workers), ("--cpus-per-worker", args.cpus_per_worker)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be ≥ 1, got {value}")
    config, run = resolve(args)
    device = "cuda" if args.gpu else config.device  # where the run trains: its default precision path
    config = precision.resolve(config, device)  # before config.json: the run folder records the path it takes
    if args.dry_run:
        with user_input():  # e.g. a train_data folder that does not exist, a text file as weights
            check_config(config, args.num_workers)
            plan = describe(resource_plan(config, args.num_workers))
        print(config.to_json())
        print(plan, flush=True)
        print(f"precision: {precision.describe(config, device)}", flush=True)
        # the threads a worker will get: a Ray worker's share of the cores (cpus_per_worker), else torch's default
        threads = cpus_per_worker(args, os.cpu_count() or 1) if args.launcher == "ray" else 0
        print(estimate_lines(config, measure_step(config, args.num_workers, threads)))
        return 0
    # --gpu means CUDA: a worker must never fall back to the CPU silently while GPUs are reserved for it, and an
    # unusable CUDA (no device, a driver too old for this torch build) fails here in one line, before any
    # worker starts (a cluster's driver may have no GPU: there each worker's pick_device raises instead).
    if args.gpu and config.device == "auto":
        config = dataclasses.replace(config, device="cuda")
    if config.device == "cuda" and not getattr(args, "address", None):
        pick_device(config)  # DeviceError
    with user_input():  # Config-, Data-, Conversion-, StorageError; a file or a storage that cannot be read
        if args.launcher == "local" and storage.is_uri(run):
            raise ConfigError(f"--launcher local writes to a local path, not {run}; use --launcher ray for a URI")
        check_inputs(config, args, run)
        if args.launcher == "ray":
            connect_ray(args, config, run)  # refuses a run folder the cluster's nodes cannot all reach
    storage.write_text(storage.join(run, CONFIG_FILE), config.to_json())
    print(f"{'resuming' if args.resume else 'run folder'} {run}", flush=True)
    started = time.time()
    launch = launch_ray if args.launcher == "ray" else launch_local
    status, step = "finished", None
    try:
        result = launch(config, run, args)
    except NonFiniteLoss as err:
        report(err)
        result, status = {"error": str(err)}, "stopped: non-finite loss"
    except (DeepsimError, FileNotFoundError, ValueError, RuntimeError) as err:
        report(err)
        result, status = {"error": str(err)}, f"failed: {type(err).__name__}"
    else:
        step = final_step(result)
        if step is not None and step < config.steps:  # the time limit ended it (the loop's only early stop)
            status = "stopped"
    wall = time.time() - started
    stopped = {"stopped_at": step, "reason": f"time limit of {config.time_limit_min:g} min"} if status == "stopped" else {}
    provenance.write(run, provenance.record(provenance.command("repro.train", argv), run_config=config,
                                            device=provenance.device(), started=started, config=config.to_dict(),
                                            status=status, steps=config.steps, **stopped, launcher=args.launcher,
                                            precision=precision.name_of(config),
                                            num_workers=args.num_workers, result=result))
    head = {"finished": f"finished {config.steps} steps",
            "stopped": f"stopped at step {step} of {config.steps} ({stopped.get('reason')})"}.get(status, status)
    grid = storage.join(run, f"grid-latest{FIGURE_SUFFIX}")
    shown = f"; grid: {grid}" if storage.exists(grid) else ""  # a run that failed before drawing has none
    print(f"{head}: run folder {run} ({wall:.0f} s){shown}")
    return 0 if status in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
