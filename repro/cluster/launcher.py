"""`--launcher ray`: Ray Train's `TorchTrainer` runs the one loop in each of `--num-workers` data-parallel
workers (gloo on CPU, NCCL with `--gpu`), on a local Ray runtime unless `--address` names a cluster.

- `connect_ray` (on the driver, before any worker starts): start or join Ray, then the cluster checks — a run
  folder and image folders every node reaches — and, on more than one node, the weights files into the object
  store (`repro.cluster.shipping`).
- `launch_ray`: the trainer. The run folder is Ray's experiment folder on `--storage` (a path every node mounts,
  or a URI): rank 0 writes the logs there wherever it runs, Ray the checkpoints, registered as
  RUN/checkpoints/step-N; a worker that dies is restarted from the last registered one (`--max-failures`).
- `ray_worker`: what each worker runs — dict → typed Config on entry, the agreed checkpoint
  (`repro.cluster.resume`), then `repro.loop.train` with a `Session` whose reports go through `ray.train.report`.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from repro import storage
from repro.cluster.resume import agreed_resume
from repro.cluster.shipping import install_weights, runtime_env, ship_weights
from repro.config import Config, from_dict
from repro.data import resolve_folder
from repro.loop import Session, train

# Ray is imported inside the functions that use it: an optional dependency (`--launcher local` runs without it).


def cpus_per_worker(args: argparse.Namespace, cluster_cpus: int) -> int:
    """--cpus-per-worker, else: on a local runtime the cores shared out among the workers (one worker on 2
    cores trains 1.6× faster with both than with Ray's default of one), on a cluster 1."""
    if args.cpus_per_worker:
        return args.cpus_per_worker
    if args.address:
        return 1
    return max(1, cluster_cpus // args.num_workers)


def connect_ray(args: argparse.Namespace, config: Config, run: str) -> None:
    """Start or join Ray, then refuse (StorageError, before any worker starts) a run folder that the
    cluster's other nodes cannot reach, and image folders they do not see; on a multi-node cluster put the
    weights files into the object store (`args.shipped_weights`)."""
    try:
        import ray
    except ImportError as err:
        raise SystemExit(f"error: Ray is not installed here ({err}); use --launcher local") from err
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


def ray_worker(loop_config: dict[str, Any]) -> None:
    """Runs inside each Ray Train worker: dict → typed Config on entry, then the same loop.

    One checkpoint truth: rank 0 writes each checkpoint (atomic, checksummed) into a node-local staging
    folder and reports it; Ray copies it to RUN/checkpoints/step-N on the storage and registers it (the run
    folder is Ray's experiment folder), and the staging copy is deleted. A restarted or resumed worker group
    resumes from the one checkpoint rank 0 chooses (`agreed_resume`), each worker checking that it loaded that
    very one; the loop then broadcasts rank 0's weights to every worker (`repro.loop.Trainer`)."""
    import ray.train
    from ray.train import Checkpoint

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
