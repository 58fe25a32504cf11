"""The one checkpoint every worker of a Ray Train run resumes from (`agreed_resume`).

Resuming (a restart after a failure, `--resume`) cannot diverge: rank 0 alone chooses the checkpoint — Ray's
registered one, the --resume one, or a newer complete one in the run folder Ray had not registered yet — and
broadcasts its choice; every worker loads that very one (step and sha256 checked) or every worker stops with
the same error. No Ray here: the worker (`repro.cluster.launcher.ray_worker`) passes its copy of Ray's
registered checkpoint, and the collectives are `repro.distributed`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from repro import checkpoint as ckpt
from repro import storage
from repro.distributed import broadcast_object, gather_object


def newer_on_storage(run: str, registered: dict[str, Any] | None) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete, checksum-verified checkpoint in the run folder when it is newer than Ray's
    registered one (or there is none), else None.

    Ray uploads a checkpoint into RUN/checkpoints/step-N and registers it afterwards; a worker killed between the
    two would otherwise redo a second interval. The run folder is the one truth, Ray's registration its index:
    a torn upload fails `checkpoint.verify` and is skipped. Only for run folders every node mounts (a URI's
    uploads are trusted once Ray registered them)."""
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
