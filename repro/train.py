"""`python -m repro.train`: resolve a config, make the run folder, launch the one loop.

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
- `--launcher local`: the very same loop in this process, without Ray (debugging; machines without Ray).

Every run folder holds config.json, provenance.json (command, commit, data and weights sha256, device,
steps, wall time), stats.jsonl / metrics.csv / TensorBoard, image grids and checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repro import precision, provenance, storage
from repro.assets import AssetError, assets_root, sha256_file
from repro.config import Config, ConfigError, PRESETS, from_dict, make_config, parse_overrides
from repro.errors import DeepsimError, cli, report, user_input

# Modules that load torch (loop, checkpoint, data, comparators, weights, plan, …) and Ray are imported where
# used: `--help` and a bad argument answer at once instead of after seconds of imports.

log = logging.getLogger("repro.train")


def weight_files(config: Config) -> list[tuple[str, Path]]:
    """(config field, or "cache" for the pretrained cache, path) of every weights file the run reads; the
    squeezenet files are assets (they travel with the assets folder)."""
    from repro.weights import weights_path

    files = []
    for field, name, user in (("encoder_weights", config.encoder, config.encoder_weights),
                              ("comparator_weights", config.comparator, config.comparator_weights)):
        if user:
            files.append((field, Path(user)))
        elif name in ("alexnet", "alexnet-tv"):
            files.append(("cache", weights_path("alexnet_tv")))
    return sorted(set(files))


def ship_weights(config: Config) -> list[dict[str, Any]]:
    """Put every weights file the run reads into Ray's object store, with its sha256, so that a node without
    it (no ~/.cache/deepsim there, or the user's file only on this machine) gets this machine's copy. A
    missing file is an AssetError here, on the driver, not a crash inside a worker."""
    import hashlib

    import ray

    files = weight_files(config)
    for field, path in files:  # all checked before any is put
        if not path.is_file():
            hint = "run `make weights` on this machine" if field == "cache" else f"fix --set {field}="
            raise AssetError(f"weights file {path} ({field}) is missing on the driver: {hint}")
    shipped = []
    for field, path in files:
        data = path.read_bytes()
        shipped.append({"field": field, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                        "ref": ray.put(data)})
    return shipped


def install_weights(config: Config, shipped: list[dict[str, Any]]) -> Config:
    """On a worker: each shipped weights file is used where it lies when its sha256 matches the driver's;
    else the driver's copy is fetched from the object store, its sha256 checked, and written to a node-local
    folder (the pretrained cache through $DEEPSIM_CACHE, a user file by its config field in this worker's
    config)."""
    import hashlib
    import tempfile

    import ray

    from repro.weights import weights_path

    changes = {}
    for item in shipped:
        path = Path(item["path"])
        here = weights_path(path.stem) if item["field"] == "cache" else path  # this node's cache, or the user's path
        if here.is_file() and sha256_file(here) == item["sha256"]:
            continue
        data = ray.get(item["ref"])
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise AssetError(f"the copy of {path} received from the driver does not match its sha256")
        folder = Path(tempfile.gettempdir()) / "deepsim-weights" / item["sha256"][:16]
        target = folder / "weights" / path.name if item["field"] == "cache" else folder / path.name
        if not (target.is_file() and sha256_file(target) == item["sha256"]):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            partial.write_bytes(data)
            os.replace(partial, target)
        if item["field"] == "cache":
            os.environ["DEEPSIM_CACHE"] = str(folder)
        else:
            changes[item["field"]] = str(target)
        log.info("%s: using the driver's copy (sha256 %s…) at %s", path, item["sha256"][:12], target)
    return dataclasses.replace(config, **changes) if changes else config


def newer_on_storage(run: str, registered: dict[str, Any] | None) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete, checksum-verified checkpoint in the run folder when it is newer than Ray's
    registered one (or there is none), else None.

    Ray uploads a checkpoint into RUN/checkpoints/step-N and registers it afterwards; a worker killed between the
    two would otherwise redo a second interval. The run folder is the one truth, Ray's registration its index:
    a torn upload fails `checkpoint.verify` and is skipped. Only for run folders every node mounts (a URI's
    uploads are trusted once Ray registered them)."""
    from repro import checkpoint as ckpt

    if storage.is_uri(run):
        return None
    return ckpt.load_latest(Path(run) / "checkpoints", after_step=-1 if registered is None else registered["step"])


def choose_checkpoint(run: str, registered: Path | None,
                      resume_from: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Rank 0's choice of the checkpoint every worker resumes from, and its state: Ray's registered one
    (`registered`: this worker's copy of it), else the --resume checkpoint `resume_from` (a run Ray never
    registered one of); either replaced by a newer complete one in the run folder that Ray has not registered
    yet (`newer_on_storage`). (None, None) for a fresh start.

    The choice is a small record that travels to the other workers: path, step and the sha256 of its state,
    `from_ray` (each worker reads its own copy of Ray's registered checkpoint, else the path on the storage),
    `register` (register it with Ray now) and `source` (for the log)."""
    from repro import checkpoint as ckpt

    choice, state = None, None
    if registered is not None:  # a restarted worker group, or --resume of a run Ray has checkpoints of
        state = ckpt.load(registered)
        choice = {"path": str(registered), "from_ray": True, "register": False,
                  "source": "Ray's last registered checkpoint"}
    elif resume_from:  # --resume of a run Ray never registered a checkpoint of (--launcher local)
        state = ckpt.load(Path(resume_from))
        choice = {"path": resume_from, "from_ray": False, "register": False, "source": resume_from}
    unregistered = newer_on_storage(run, state)
    if unregistered is not None:
        folder, state = unregistered
        choice = {"path": str(folder), "from_ray": False, "register": True,
                  "source": f"{folder} (complete on the storage, not yet registered by Ray)"}
    if choice is None:
        return None, None
    choice.update(step=int(state["step"]), sha256=ckpt.recorded_sha256(Path(choice["path"])))
    return choice, state


def load_choice(choice: dict[str, Any], registered: Path | None) -> dict[str, Any]:
    """On a worker other than rank 0: the state of the checkpoint rank 0 chose, read from this worker's copy of
    Ray's registered checkpoint or from the storage, and checked to be that very checkpoint (step and sha256)."""
    from repro import checkpoint as ckpt

    folder = registered if choice["from_ray"] else Path(choice["path"])
    if folder is None:
        raise ckpt.CheckpointError(f"rank 0 resumes from Ray's registered checkpoint {choice['path']}, but Ray gave "
                                   "this worker none")
    state = ckpt.load(folder)
    sha256 = ckpt.recorded_sha256(folder)
    if int(state["step"]) != choice["step"] or sha256 != choice["sha256"]:
        raise ckpt.CheckpointError(f"{folder} holds step {state['step']} (sha256 {str(sha256)[:12]}…), not the "
                                   f"step {choice['step']} (sha256 {str(choice['sha256'])[:12]}…) that rank 0 "
                                   f"chose from {choice['path']}")
    return state


def agreed_resume(rank: int, world_size: int, run: str, registered: Path | None,
                  resume_from: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The one checkpoint every worker resumes from: (rank 0's choice, this worker's copy of its state), or
    (None, None) for a fresh start on every worker.

    Rank 0 alone chooses (`choose_checkpoint`) and broadcasts its choice; every other worker loads that very
    checkpoint (`load_choice`) instead of looking for one itself: on a storage such as NFS with attribute
    caching, workers listing the run folder can see different newest checkpoints, and each would silently
    train from its own. When any worker cannot read the choice, every worker raises the same CheckpointError
    (gathered from all of them): one that failed alone would leave the others waiting in a collective. One
    worker, or no process group: no collective, the same choice."""
    from repro import checkpoint as ckpt
    from repro.distributed import broadcast_object, gather_object

    choice, state, problem = None, None, None
    if rank == 0:
        try:
            choice, state = choose_checkpoint(run, registered, resume_from)
        except (OSError, ckpt.CheckpointError) as err:
            problem = f"rank 0 could not choose a checkpoint: {err}"
    choice = broadcast_object(choice, world_size)
    if rank != 0 and choice is not None:
        try:
            state = load_choice(choice, registered)
        except (OSError, ckpt.CheckpointError) as err:
            problem = f"rank {rank} could not read the checkpoint rank 0 chose: {err}"
    problems = [p for p in gather_object(problem, world_size) if p]
    if problems:
        raise ckpt.CheckpointError(
            f"the workers cannot resume from one checkpoint ({'; '.join(problems)}); every worker stops rather than "
            f"train from different ones (Ray restarts the group up to --max-failures times). Check that every node "
            f"sees {run} alike: an NFS mount caching attributes can hide a new checkpoint for a while (actimeo=0)")
    return choice, state


def ray_worker(loop_config: dict[str, Any]) -> None:
    """Runs inside each Ray Train worker: dict → typed Config on entry, then the same loop.

    One checkpoint truth: rank 0 writes each checkpoint (atomic, checksummed) into a node-local staging
    folder and reports it; Ray copies it to RUN/checkpoints/step-N on the storage and registers it (the run
    folder is Ray's experiment folder), and the staging copy is deleted. A restarted or resumed worker group
    resumes from the one checkpoint rank 0 chooses (`agreed_resume`), each worker checking that it loaded that
    very one; the loop then broadcasts rank 0's weights to every worker (`repro.loop.Trainer`)."""
    import shutil
    import tempfile
    from contextlib import nullcontext

    import ray.train
    import torch
    from ray.train import Checkpoint

    from repro.loop import Session, train

    config = install_weights(from_dict(loop_config["config"]), loop_config.get("weights", []))
    run = loop_config["run_dir"]  # a path every node mounts, or a URI
    # config.threads, else the CPUs Ray reserved for this worker (Ray's own default would be 1 thread)
    torch.set_num_threads(config.threads if config.threads > 0 else max(1, int(loop_config.get("cpus_per_worker", 1))))
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    restored = ray.train.get_checkpoint()  # Ray's registered checkpoint: a restarted group, or --resume
    with restored.as_directory() if restored is not None else nullcontext() as folder:
        choice, resume_state = agreed_resume(rank, world_size, run, Path(folder) if folder else None,
                                             loop_config.get("resume_from"))
    if choice is not None and rank == 0:
        print(f"resuming after step {choice['step']} from {choice['source']}", flush=True)

    mirror = None
    if storage.is_uri(run):  # rank 0 logs into a node-local folder and uploads it after every report
        run_dir = Path(tempfile.mkdtemp(prefix="deepsim-run-"))
        mirror = storage.Mirror(run_dir, run)
        if rank == 0:
            mirror.pull("stats.jsonl", "metrics.csv")  # appended to, not replaced, by a resumed run
    else:
        run_dir = Path(run)
    staging = Path(tempfile.mkdtemp(prefix="deepsim-checkpoints-"))

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if folder is not None:
            ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(folder)),
                             checkpoint_dir_name=f"checkpoints/{folder.name}",  # rank 0's name wins
                             delete_local_checkpoint_after_upload=True)
        else:
            ray.train.report(clean)
        if mirror is not None and rank == 0:
            mirror.push()

    if choice is not None and choice["register"]:  # register it now, so Ray's retention and a later restart know it
        folder = None  # every worker reports (Ray waits for all), rank 0 with the checkpoint
        if rank == 0:
            folder = staging / Path(choice["path"]).name
            shutil.copytree(choice["path"], folder)
        report({"step": choice["step"]}, folder)
    session = Session(rank=rank, world_size=world_size, report=report, resume_state=resume_state,
                      show_progress=loop_config.get("progress", True), progress=RayProgress,
                      checkpoint_dir=staging)
    try:
        train(config, run_dir, session)
        if mirror is not None and rank == 0:
            mirror.push()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if mirror is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


class RayProgress:
    """The loop's progress bar through Ray's tqdm integration (`ray.experimental.tqdm_ray`): a worker's updates
    are drawn as one live bar on the driver, not as a new log line each (tqdm's carriage returns do not survive
    Ray's log forwarding). The loop's postfix (loss terms) goes into the bar's description."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False,
                 **_: Any):
        self.desc, self.bar = desc, None
        if not disable:
            from ray.experimental.tqdm_ray import tqdm as ray_tqdm

            self.bar = ray_tqdm(total=total, desc=desc, unit=unit)
            self.bar.n = initial

    def set_postfix(self, values: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.desc} " + " ".join(f"{k}={v}" for k, v in values.items()))

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_ray_workers() -> None:
    """Runs in every Ray worker process at start (`worker_process_setup_hook`). We start Ray without its
    dashboard, so Ray Train's placement-group cleaner cannot reach the state API and would print a
    warning about it every second of the run; only its errors are kept."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def cpus_per_worker(args: argparse.Namespace, cluster_cpus: int) -> int:
    """--cpus-per-worker, else: on a local runtime the cores shared out among the workers (one worker on 2
    cores trains 1.6× faster with both than with Ray's default of one), on a cluster 1."""
    if args.cpus_per_worker:
        return args.cpus_per_worker
    if args.address:
        return 1
    return max(1, cluster_cpus // args.num_workers)


# The code a cluster's workers import (tune's trials run this loop too), found beside this package by path: repro
# does not import tune to locate it.
CLUSTER_PACKAGES = tuple(Path(__file__).resolve().parents[1] / name for name in ("repro", "converters", "tune"))


def runtime_env(args: argparse.Namespace) -> dict[str, Any]:
    """What every Ray worker process gets. On a cluster (`--address`) the code travels with the job
    (`py_modules`: the packages in CLUSTER_PACKAGES), and the assets folder is named explicitly
    (the shipped package no longer sits beside ../shared/assets): every node must mount it at that path,
    which `connect_ray` checks."""
    env: dict[str, Any] = {"worker_process_setup_hook": quiet_ray_workers}
    if not args.address:
        # A local runtime has no node that a cloud could preempt: without Ray Train's preemption watcher its
        # controller prints no alarming `PreemptionWatcher … max_restarts > 0` error line on every run.
        env["env_vars"] = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    if args.address:
        env["py_modules"] = [str(path) for path in CLUSTER_PACKAGES]
        env["env_vars"] = {"DEEPSIM_ASSETS": str(assets_root())}
    return env


def connect_ray(args: argparse.Namespace, config: Config, run: str) -> None:
    """Start or join Ray, then refuse (StorageError, before any worker starts) a run folder that the
    cluster's other nodes cannot reach, and image folders they do not see; on a multi-node cluster put the
    weights files into the object store (`args.shipped_weights`)."""
    try:
        import ray
    except ImportError as err:
        raise SystemExit(f"error: Ray is not installed here ({err}); use --launcher local") from err
    from repro.data import resolve_folder

    if not ray.is_initialized():  # no --address: a new local runtime ("local"), even beside a `ray start` cluster
        ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=True,
                 logging_level=logging.INFO if args.verbose else logging.WARNING,  # warnings and errors show
                 runtime_env=runtime_env(args),
                 **({} if args.address else {"num_cpus": max(args.num_workers, os.cpu_count() or 1)}))
    nodes = ray.nodes()
    storage.require_shared(run, nodes, args.storage is not None or args.resume is not None, args.address)
    storage.check_shared(run, nodes)
    for name in sorted({config.train_data, config.eval_data}):
        storage.check_shared(str(resolve_folder(name, verify=False)), nodes, what=f"image folder {name!r}")
    args.shipped_weights = ship_weights(config) if len(storage.alive_nodes(nodes)) > 1 else []


def launch_ray(config: Config, run: str, args: argparse.Namespace) -> dict[str, Any]:
    """Ray Train on the run folder `run` (a shared path or a URI), which is also Ray's experiment folder:
    Ray's registered checkpoints are RUN/checkpoints/step-N, and a run started again under the same folder
    (`--resume`, or a restart after a failure) continues from the newest of them."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cpus = cpus_per_worker(args, int(ray.cluster_resources().get("CPU", 1)))
    storage_path, name = storage.split(run)
    resume_from = getattr(args, "resume_from", None)
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"config": config.to_dict(), "run_dir": run,
                           "resume_from": str(resume_from[0]) if resume_from else None,
                           "weights": getattr(args, "shipped_weights", []),
                           "progress": not args.no_progress, "cpus_per_worker": cpus},
        torch_config=TorchConfig(backend="nccl" if args.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=args.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints or None),
                             # Ray Train's own INFO lines (resources, process group, every checkpoint and report)
                             # stay in its log files; its warnings and errors still show
                             logging_config=LoggingConfig(log_level="INFO" if args.verbose else "WARNING")),
    )
    result = trainer.fit()
    if getattr(result, "error", None):
        raise result.error
    return {"metrics": result.metrics, "cpus_per_worker": cpus}


def launch_local(config: Config, run: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from repro import checkpoint as ckpt
    from repro.loop import Session, train

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
        from repro.checkpoint import check_resumable

        run = run_location(args, "")
        saved = storage.read_text(storage.join(run, "config.json"))
        if saved is None:
            raise ConfigError(f"{args.resume} is not a run folder (no config.json)")
        base = from_dict(json.loads(saved))
        overrides = parse_overrides(args.overrides)
        if args.preset is not None and args.preset != base.preset:
            raise ConfigError(f"{args.resume} is a {base.preset!r} run, not {args.preset!r}; leave --preset out "
                              "when resuming (the run keeps its own config.json)")
        data = base.to_dict()
        data.update(overrides)
        resumed = from_dict(data)
        check_resumable(base, resumed)
        return resumed, run
    config = make_config(args.preset or "conv5star-warm", parse_overrides(args.overrides))
    return config, run_location(args, config.preset)


def check_config(config: Config, world_size: int = 1) -> None:
    """What a config names, checked before any run folder exists (also by --dry-run): the image folders and
    one batch of training images, the networks and their taps, the weights files (read now: a file that is
    not weights fails here, not in a worker), and the resolution each network and D can take. Raises
    ValueError (ConfigError, DataError, ConversionError), FileNotFoundError or AssetError."""
    import torch

    from repro.comparators import NETS, build_net
    from repro.data import listing, require_one_batch, resolve_folder, resolve_source
    from repro.losses import minimum_side
    from repro.plan import SAME_SHAPES

    for folder in (config.train_data, config.eval_data):
        resolve_folder(folder, verify=False)
    # fewer images than one batch: every epoch would be empty and the loader would wait forever
    require_one_batch(listing(resolve_source(config.train_data)), config.train_data, config.batch_size, world_size)
    nets = [("encoder", config.encoder, config.encoder_weights, config.layer)] if config.model == "inversion" else []
    if config.recon_loss == "deepsim" and config.lambda_feat > 0:
        nets.append(("comparator", config.comparator, config.comparator_weights, config.comparator_tap))
    for role, name, weights, tap in nets:
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
    from repro import checkpoint as ckpt

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
        ckpt.check_resume_checkpoint(*found, config, run_dir / "config.json")
        args.resume_from = found  # the local launcher need not read it twice


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
        from repro.plan import describe, resource_plan

        with user_input():  # e.g. a train_data folder that does not exist, a text file as weights
            check_config(config, args.num_workers)
            plan = describe(resource_plan(config, args.num_workers))
        print(config.to_json())
        print(plan, flush=True)
        print(f"precision: {precision.describe(config, device)}", flush=True)
        from repro.plan import estimate_lines, measure_step

        # the threads a worker will get: a Ray worker's share of the cores (cpus_per_worker), else torch's default
        threads = cpus_per_worker(args, os.cpu_count() or 1) if args.launcher == "ray" else 0
        print(estimate_lines(config, measure_step(config, args.num_workers, threads)))
        return 0
    # --gpu means CUDA: a worker must never fall back to the CPU silently while GPUs are reserved for it, and an
    # unusable CUDA (no device, a driver too old for this torch build) fails here in one line, before any
    # worker starts (a cluster's driver may have no GPU: there each worker's pick_device raises instead).
    if args.gpu and config.device == "auto":
        from dataclasses import replace

        config = replace(config, device="cuda")
    if config.device == "cuda" and not getattr(args, "address", None):
        from repro.devices import pick_device

        pick_device(config)  # DeviceError
    from repro.figures import FIGURE_SUFFIX

    with user_input():  # Config-, Data-, Conversion-, StorageError; a file or a storage that cannot be read
        if args.launcher == "local" and storage.is_uri(run):
            raise ConfigError(f"--launcher local writes to a local path, not {run}; use --launcher ray for a URI")
        check_inputs(config, args, run)
        if args.launcher == "ray":
            connect_ray(args, config, run)  # refuses a run folder the cluster's nodes cannot all reach
    storage.write_text(storage.join(run, "config.json"), config.to_json())
    print(f"{'resuming' if args.resume else 'run folder'} {run}", flush=True)
    started = time.time()
    from repro.loop import NonFiniteLoss

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
