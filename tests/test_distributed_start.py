"""Two workers always start from one state: they resume from the checkpoint rank 0 chose even when they see
different checkpoint folders (or every one stops with the same error), they hold rank 0's weights after start
whatever each initialised, and each draws its own dropout stream, which a checkpoint keeps per worker.

Two real processes in a gloo group (`torch.multiprocessing`, spawned on the CPU), each making its own view of
the storage inside the process (a stale listing, an older copy of Ray's checkpoint, a torn read).

Checked to fail on the code before (issue 24, item 5), each against the part it pins, put back in a scratch
copy: every rank choosing its own newest checkpoint (rank 1 resumed after step 4, rank 0 after step 6); no
broadcast at start (rank 1 kept its own initial weights); one seed for all ranks (the same dropout draws on
both); every rank restoring the checkpoint's `torch_rng` (rank 1 resumed rank 0's stream).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repro import checkpoint

WORLD = 2


def spawn(worker, tmp_path: Path, *args) -> None:
    mp.start_processes(worker, args=(str(tmp_path / "init"), str(tmp_path), *args), nprocs=WORLD,
                       start_method="spawn", join=True)


def join_group(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)


# ---- one agreed checkpoint ------------------------------------------------------------------------------------

def storage(tmp_path: Path) -> dict[str, Path]:
    """Run folders: `run` with Ray's registered step 4 and a complete unregistered step 6; `older` with steps 2
    and 4 (no unregistered one); `fresh` with none."""
    runs = {name: tmp_path / name for name in ("run", "older", "fresh")}
    for name, steps in (("run", (4, 6)), ("older", (2, 4))):
        for step in steps:
            checkpoint.save(runs[name] / "checkpoints", step, {"step": step, "model": {"w": torch.full((3,), step)}},
                            keep=5)
    runs["fresh"].mkdir()
    return runs


def resume_worker(rank: int, init_file: str, out: str) -> None:
    from repro import checkpoint as ckpt
    from repro.cluster.resume import agreed_resume

    join_group(rank, init_file)
    run, older, fresh = (str(Path(out) / name) for name in ("run", "older", "fresh"))
    step = lambda folder, n: Path(folder) / "checkpoints" / f"step-{n:08d}"  # noqa: E731
    real_latest, real_verify = ckpt.load_latest, ckpt.verify
    results = {}
    try:
        for scenario, run_dir, registered in (("stale listing", run, step(run, 4)),
                                              ("older copy of Ray's", older, step(older, 4)),
                                              ("torn read", run, step(run, 4)),
                                              ("fresh", fresh, None)):
            ckpt.load_latest, ckpt.verify = real_latest, real_verify
            if rank == 1 and scenario == "stale listing":  # its listing lags: nothing newer than Ray's step 4
                ckpt.load_latest = lambda directory, after_step=-1: None
            if rank == 1 and scenario == "older copy of Ray's":
                registered = step(older, 2)
            if rank == 1 and scenario == "torn read":  # step 6 reads as half written on this node
                ckpt.verify = lambda folder: "state.pt does not match its recorded sha256" if "0006" in str(folder) \
                    else real_verify(folder)
            try:
                choice, state = agreed_resume(rank, WORLD, run_dir, registered, None)
                results[scenario] = {"choice": choice, "step": None if state is None else int(state["step"]),
                                     "w": None if state is None else state["model"]["w"].tolist()}
            except ckpt.CheckpointError as err:
                results[scenario] = {"error": str(err)}
    finally:
        dist.destroy_process_group()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(results))


def test_workers_resume_from_the_checkpoint_rank_0_chose_or_all_stop(tmp_path):
    storage(tmp_path)
    spawn(resume_worker, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    # rank 1's listing lags behind: it still resumes from the unregistered step 6 rank 0 found, not Ray's step 4
    stale = [rank["stale listing"] for rank in ranks]
    assert [r.get("step") for r in stale] == [6, 6], stale
    assert stale[0]["w"] == stale[1]["w"] == [6.0] * 3
    assert stale[0]["choice"] == stale[1]["choice"] and stale[0]["choice"]["register"], stale
    assert stale[0]["choice"]["sha256"] == checkpoint.recorded_sha256(tmp_path / "run/checkpoints/step-00000006")

    # Ray hands rank 1 an older checkpoint, or step 6 reads torn there: every rank stops, none hangs or diverges
    for scenario, why in (("older copy of Ray's", r"holds step 2 .*not the step 4"),
                          ("torn read", r"rank 1 could not read the checkpoint rank 0 chose: .*step-00000006 is "
                                        r"unusable")):
        errors = [rank[scenario].get("error") for rank in ranks]
        assert errors[0] and errors[0] == errors[1], (scenario, ranks)
        assert "the workers cannot resume from one checkpoint" in errors[0]
        assert re.search(why, errors[0]), errors[0]

    assert [rank["fresh"] for rank in ranks] == [{"choice": None, "step": None, "w": None}] * 2


def test_one_worker_chooses_without_a_process_group(tmp_path):
    """world_size 1 (the local launcher's case, a Tune trial): no collective is called, the same choice."""
    from repro.cluster.resume import agreed_resume

    runs = storage(tmp_path)
    assert not dist.is_initialized()
    choice, state = agreed_resume(0, 1, str(runs["run"]), runs["run"] / "checkpoints" / "step-00000004", None)
    assert (choice["step"], state["step"], choice["register"], choice["from_ray"]) == (6, 6, True, False)
    choice, state = agreed_resume(0, 1, str(runs["older"]), None, str(runs["older"] / "checkpoints" / "step-00000004"))
    assert (choice["step"], choice["register"], choice["source"]) == (4, False, choice["path"])
    assert agreed_resume(0, 1, str(runs["fresh"]), None, None) == (None, None)


# ---- one start state, a stream per worker -----------------------------------------------------------------------

def start_worker(rank: int, init_file: str, out: str) -> None:
    from repro import loop
    from repro.config import make_config
    from repro.loop import Session, Trainer

    join_group(rank, init_file)
    if rank == 1:  # this worker initialises other weights than rank 0 (another seed, another library version)
        build = loop.build_parts
        loop.build_parts = lambda config, device: build(dataclasses.replace(config, seed=config.seed + 100), device)
    config = make_config("smoke", {"threads": "1"})
    session = Session(rank=rank, world_size=WORLD, show_progress=False)
    try:
        trainer = Trainer(config, Path(out) / f"rank{rank}", session)
        d = trainer.parts.discriminator
        weights = {**checkpoint.model_state(trainer.parts.model), **{f"D.{k}": v for k, v in d.state_dict().items()}}
        started = torch.rand(8)  # what D's dropout would draw next
        state = trainer.checkpoint_state()
        if rank == 0:
            torch.save(state, Path(out) / "state.pt")
        after_checkpoint = torch.rand(8)
        dist.barrier()
        resumed = Trainer(config, Path(out) / f"resumed{rank}",
                          dataclasses.replace(session, resume_state=torch.load(Path(out) / "state.pt")))
        del resumed
        torch.save({"weights": {k: v.clone() for k, v in weights.items()}, "started": started,
                    "after_checkpoint": after_checkpoint, "resumed": torch.rand(8)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_workers_start_from_rank_0s_weights_each_with_its_own_stream(tmp_path):
    spawn(start_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    differ = [k for k, v in ranks[0]["weights"].items() if not torch.equal(v, ranks[1]["weights"][k])]
    assert not differ, f"rank 1 kept weights of its own after start: {differ[:5]}"
    assert {k.split(".")[0] for k in ranks[0]["weights"]} == {"generator", "D"}  # G and D were compared
    # each worker its own dropout stream; rank 0's is a single worker's (seed 0), so 1-worker runs are unchanged
    assert torch.equal(ranks[0]["started"], torch.rand(8, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(ranks[0]["started"], ranks[1]["started"]), "both workers draw the same dropout masks"
    # the checkpoint keeps every worker's stream: each one resumes its own, not rank 0's
    state = torch.load(tmp_path / "state.pt")
    assert len(state["rank_rng"]) == WORLD and torch.equal(state["torch_rng"], state["rank_rng"][0]["torch"])
    for rank in ranks:
        assert torch.equal(rank["resumed"], rank["after_checkpoint"]), "a resumed worker lost its own stream"
