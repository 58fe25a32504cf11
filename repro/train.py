"""`python -m repro.train`: resolve a config, make the run folder, launch the one loop.

Launchers:
- `--launcher ray` (default): Ray Train's `TorchTrainer`, a local Ray runtime unless `--address` names a
  cluster; `--num-workers` data-parallel workers (gloo on CPU, NCCL with `--gpu`); metrics and
  checkpoints go through `ray.train.report`; a worker that dies is restarted from the last reported
  checkpoint (`--max-failures`).
- `--launcher local`: the very same loop in this process, without Ray (debugging; machines without Ray).

Every run folder holds config.json, provenance.json (command, commit, data and weights sha256, device,
steps, wall time), stats.jsonl / metrics.csv / TensorBoard, image grids and checkpoints.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repro.config import Config, ConfigError, PRESETS, from_dict, make_config, parse_overrides

log = logging.getLogger("repro.train")


@functools.cache
def git_commit() -> str:
    """HEAD (+dirty) when first asked: entry points ask at start, so the record names the code that was
    imported, even if the tree changes while a long run goes on."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def weights_provenance(config: Config) -> dict[str, str]:
    """sha256 of every weights file the run depends on (pretrained cache or user files)."""
    from repro.assets import sha256_file
    from repro.weights import weights_path

    out = {}
    for role, name, user in (("encoder", config.encoder, config.encoder_weights),
                             ("comparator", config.comparator, config.comparator_weights)):
        if user:
            out[role] = f"{user} sha256={sha256_file(user)}"
        elif name in ("alexnet", "alexnet-tv"):
            path = weights_path("alexnet_tv")
            out[role] = f"{path} sha256={sha256_file(path) if path.exists() else 'missing'}"
        elif name == "squeezenet":
            from converters.squeezenet_dc import default_paths

            out[role] = " + ".join(f"{path} sha256={sha256_file(path)}" for path in default_paths())
        else:
            out[role] = f"{name} (seeded random, seed {config.seed})"
    return out


def data_provenance(config: Config) -> dict[str, str]:
    from repro.assets import FOLDER_SHA256

    return {role: (f"../shared/assets/{name} sha256={FOLDER_SHA256[name]}" if name in FOLDER_SHA256 else name)
            for role, name in (("train", config.train_data), ("eval", config.eval_data))}


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def write_provenance(run_dir: Path, config: Config, argv: list[str], extra: dict[str, Any]) -> None:
    record = {
        "command": "python -m repro.train " + " ".join(shlex.quote(a) for a in argv),
        "commit": git_commit(),
        "config": config.to_dict(),
        "data": data_provenance(config),
        "weights": weights_provenance(config),
        "device": device_description(),
        **extra,
    }
    (run_dir / "provenance.json").write_text(json.dumps(record, indent=2, default=str))


def agreed_step(step: int) -> int:
    """The smallest `step` over the data-parallel workers (the step itself when there is one worker)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return step
    value = torch.tensor([step], dtype=torch.long)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value)


def ray_worker(loop_config: dict[str, Any]) -> None:
    """Runs inside each Ray Train worker: dict → typed Config on entry, then the same loop."""
    import ray.train
    from ray.train import Checkpoint

    from repro import checkpoint as ckpt
    from repro.loop import Session, train

    config = from_dict(loop_config["config"])
    run_dir = Path(loop_config["run_dir"])
    if config.threads <= 0:  # use the CPUs Ray reserved for this worker (Ray's own default would be 1 thread)
        import torch

        torch.set_num_threads(max(1, int(loop_config.get("cpus_per_worker", 1))))
    context = ray.train.get_context()
    resume_state = None
    restored = ray.train.get_checkpoint()
    if restored is not None:  # restarted after a worker failure: continue from the last report
        with restored.as_directory() as folder:
            resume_state = ckpt.load(Path(folder))
    if restored is not None or loop_config.get("resume"):
        # The run folder may hold a newer intact checkpoint than Ray registered: a worker killed while Ray
        # was still taking in its last report had already written it (atomically, checksummed). Resume from
        # whichever is newer, so a failure costs at most one checkpoint interval, but only if every worker
        # sees that file (a run folder on another node's disk does not count): all ranks take the same state.
        found = ckpt.load_latest(run_dir / "checkpoints")
        ray_step = -1 if resume_state is None else int(resume_state["step"])
        local_step = int(found[1]["step"]) if found is not None else -1
        if agreed_step(max(ray_step, local_step)) == local_step > ray_step:
            resume_state = found[1]
        if resume_state is None:
            log.warning("--resume: no checkpoint that every worker can read under %s; starting from step 0",
                        run_dir / "checkpoints")
        elif context.get_world_rank() == 0:
            source = "the run folder" if resume_state is (found or (None, None))[1] else "Ray's last registered report"
            print(f"resuming after step {resume_state['step']} from {source}", flush=True)

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if folder is not None:
            ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(folder)))
        else:
            ray.train.report(clean)

    session = Session(rank=context.get_world_rank(), world_size=context.get_world_size(), report=report,
                      resume_state=resume_state, show_progress=loop_config.get("progress", True))
    train(config, run_dir, session)


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


def launch_ray(config: Config, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as err:
        raise SystemExit(f"error: Ray is not installed here ({err}); use --launcher local") from err
    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"worker_process_setup_hook": quiet_ray_workers},
                 **({} if args.address else {"num_cpus": max(args.num_workers, os.cpu_count() or 1)}))
    cpus = cpus_per_worker(args, int(ray.cluster_resources().get("CPU", 1)))
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"config": config.to_dict(), "run_dir": str(run_dir.resolve()), "resume": args.resume is not None,
                           "progress": not args.no_progress, "cpus_per_worker": cpus},
        torch_config=TorchConfig(backend="nccl" if args.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=run_dir.name, storage_path=str((run_dir / "ray").resolve()),
                             failure_config=FailureConfig(max_failures=args.max_failures),
                             # Ray keeps its own copy of every reported checkpoint: bound it as the run
                             # folder's (0 keeps all there too)
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints or None)),
    )
    result = trainer.fit()
    if getattr(result, "error", None):
        raise result.error
    return {"metrics": result.metrics, "cpus_per_worker": cpus}


def launch_local(config: Config, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from repro import checkpoint as ckpt
    from repro.loop import Session, train

    resume_state = None
    if args.resume is not None:
        found = getattr(args, "resume_from", None) or ckpt.load_latest(run_dir / "checkpoints")
        if found is None:
            raise SystemExit(f"error: no intact checkpoint under {run_dir / 'checkpoints'} to resume from")
        log.info("resuming from %s", found[0])
        resume_state = found[1]
    return train(config, run_dir, Session(resume_state=resume_state, show_progress=not args.no_progress))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m repro.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (default small-pool5; a resumed run keeps its own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set steps=100")
    parser.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset>/<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last intact checkpoint")
    parser.add_argument("--launcher", choices=("ray", "local"), default="ray")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray runtime)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train data-parallel workers")
    parser.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs (= torch threads) per Ray worker (default: a local "
                        "runtime's cores shared out among the workers; 1 on a cluster)")
    parser.add_argument("--max-failures", type=int, default=2, help="worker failures Ray recovers from")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return parser.parse_args(argv)


# Config fields a resumed run may change (`--resume RUN_DIR --set steps=…`); all others are the run's own.
RESUMABLE = {"steps", "log_every", "image_every", "checkpoint_every", "num_workers", "device", "threads", "nonfinite",
             "keep_checkpoints"}


def resolve(args: argparse.Namespace) -> tuple[Config, Path]:
    if args.resume is not None:
        saved = args.resume / "config.json"
        if not saved.exists():
            raise ConfigError(f"{args.resume} is not a run folder (no config.json)")
        base = from_dict(json.loads(saved.read_text()))
        overrides = parse_overrides(args.overrides)
        if args.preset is not None and args.preset != base.preset:
            raise ConfigError(f"{args.resume} is a {base.preset!r} run, not {args.preset!r}; leave --preset out "
                              "when resuming (the run keeps its own config.json)")
        data = base.to_dict()
        data.update(overrides)
        resumed = from_dict(data)
        changed = {k for k in overrides if k not in RESUMABLE and getattr(resumed, k) != getattr(base, k)}
        if changed:
            raise ConfigError(f"cannot change {sorted(changed)} when resuming; allowed: {sorted(RESUMABLE)}")
        return resumed, args.resume
    config = make_config(args.preset or "small-pool5", parse_overrides(args.overrides))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return config, args.run_dir or Path("runs") / config.preset / stamp


def check_inputs(config: Config, args: argparse.Namespace, run_dir: Path) -> None:
    """Inputs that could only fail later, inside a worker and after a run folder exists, fail here: unknown
    networks or taps, missing image folders, weights files that are missing or are not weights, and a
    --resume folder without an intact checkpoint of this very config. Raises ValueError (ConfigError,
    DataError, ConversionError), FileNotFoundError or AssetError."""
    from repro import checkpoint as ckpt
    from repro.comparators import NETS, build_net
    from repro.loop import resolve_folder
    from repro.nets.caffenet import ALEXNET_TV_TAPS, CAFFENET_TAPS

    for folder in (config.train_data, config.eval_data):
        resolve_folder(folder, verify=False)
    nets = [("encoder", config.encoder, config.encoder_weights, config.layer)] if config.model == "inversion" else []
    if config.recon_loss == "deepsim" and config.lambda_feat > 0:
        nets.append(("comparator", config.comparator, config.comparator_weights, config.comparator_tap))
    for role, name, weights, tap in nets:
        if name not in NETS:
            raise ConfigError(f"{role}={name!r} is not a known network; choose from {', '.join(NETS)}")
        if weights or name in ("caffenet", "videonet", "onnx", "squeezenet"):  # read files now, not in a worker
            taps = build_net(name, config.resolution, weights or None).taps
        else:
            taps = ALEXNET_TV_TAPS if name.startswith("alexnet") else CAFFENET_TAPS
        if tap not in taps:
            raise ConfigError(f"{role} tap {tap!r} does not exist in {name}; choose from {', '.join(taps)}")
    if args.resume is not None:
        found = ckpt.load_latest(run_dir / "checkpoints")
        if found is None:
            raise ConfigError(f"{run_dir} has no intact checkpoint to resume from; start a new run instead")
        saved, current = json.loads(found[1]["config"]), json.loads(config.to_json())  # both as JSON: tuples are lists
        differ = sorted(k for k, v in current.items() if k in saved and k not in RESUMABLE and saved[k] != v)
        if differ:
            raise ConfigError(f"checkpoint {found[0]} was made with another config than {run_dir / 'config.json'} "
                              f"(differing: {', '.join(differ)}); resume a run folder with its own config.json")
        args.resume_from = found  # the local launcher need not read it twice


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    git_commit()  # pin the commit of the code now running (see git_commit)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config, run_dir = resolve(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(config.to_json())
        return 0
    for flag, value in (("--num-workers", args.num_workers), ("--cpus-per-worker", args.cpus_per_worker)):
        if value is not None and value < 1:
            print(f"error: {flag} must be ≥ 1", file=sys.stderr)
            return 2
    from repro.assets import AssetError

    try:
        check_inputs(config, args, run_dir)
    except (ValueError, FileNotFoundError, AssetError) as err:  # incl. ConfigError, DataError, ConversionError
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    started = time.time()
    from repro.loop import NonFiniteLoss

    launch = launch_ray if args.launcher == "ray" else launch_local
    status = "finished"
    try:
        result = launch(config, run_dir, args)
    except NonFiniteLoss as err:
        print(f"error: {err}", file=sys.stderr)
        result, status = {"error": str(err)}, "stopped: non-finite loss"
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        result, status = {"error": str(err)}, f"failed: {type(err).__name__}"
    wall = time.time() - started
    write_provenance(run_dir, config, argv, {"status": status, "wall_time_s": round(wall, 1),
                                             "launcher": args.launcher, "num_workers": args.num_workers,
                                             "result": result})
    print(f"{status}: run folder {run_dir} ({wall:.0f} s); grid: {run_dir / 'grid-latest.png'}")
    return 0 if status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
