"""Crash safety: `python -m repro.train` killed with SIGKILL (mid-checkpoint-write and at a random moment)
resumes with `--resume` from its last complete checkpoint, loses at most one checkpoint interval, and ends
bit-identical to an uninterrupted run; a corrupt or partial newest checkpoint is detected, reported, and
the previous one used."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from repro import checkpoint
from reliability_helpers import intact_steps, resume_argv, stats_steps, train_argv, wait_for

STEPS, EVERY = 8, 1  # smoke preset: 64 px, batch 4; a ~100 MB checkpoint after every step
SETTINGS = (f"steps={STEPS}", f"checkpoint_every={EVERY}", "keep_checkpoints=3")


def newest_state(run_dir):
    folder, state = checkpoint.load_latest(run_dir / "checkpoints")
    return folder, state


def assert_same_training_state(a, b):
    assert a["step"] == b["step"]
    for part in ("model", "discriminator"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs from the uninterrupted run"
    for opt in ("opt_g", "opt_d"):
        for index, moments in a[opt]["state"].items():
            for name, value in moments.items():
                assert torch.equal(value, b[opt]["state"][index][name]), f"{opt} state {index}.{name} differs"
    assert a["balance"] == b["balance"] and a["skipped"] == b["skipped"]


def lost_steps(run_dir) -> tuple[int, int, int]:
    """(last step logged before the crash, newest intact checkpoint step, steps that must be redone)."""
    logged = max(stats_steps(run_dir), default=0)
    intact = intact_steps(run_dir / "checkpoints")
    newest = intact[-1] if intact else 0
    return logged, newest, logged - newest


@pytest.mark.slow
def test_sigkill_mid_write_and_at_random_then_resume_matches_uninterrupted_run(tmp_path, cli, record_fault):
    rng = np.random.default_rng(0)
    reference = cli(train_argv(tmp_path / "reference", *SETTINGS), "reference")  # runs alongside
    run_dir = tmp_path / "killed"
    checkpoints = run_dir / "checkpoints"

    # (1) SIGKILL while a checkpoint is being written (its temporary folder exists, state.pt half written)
    first = cli(train_argv(run_dir, *SETTINGS), "attempt1")
    writing = wait_for(lambda: intact_steps(checkpoints) and [p for p in checkpoints.glob(".tmp-step-*")
                                                             if (p / "state.pt").exists()],
                       240, "a checkpoint write after the first complete checkpoint", first, poll=0.005)
    first.kill()
    logged, newest, lost = lost_steps(run_dir)
    record_fault("SIGKILL of the whole run during a checkpoint write",
                 f"`python -m repro.train --launcher local --preset smoke --set steps={STEPS} --set checkpoint_every="
                 f"{EVERY} --set threads=1`, killed when `{writing[0].name}/state.pt` appeared; then `--resume`",
                 f"{lost} step(s) redone (logged step {logged}, newest intact checkpoint {newest}); "
                 "the half-written folder is ignored, removed by the next save")
    assert newest >= 1 and lost <= EVERY, (logged, newest)

    # (2) resume, then SIGKILL at a random moment after the resumed run's first new checkpoint
    second = cli(resume_argv(run_dir), "attempt2")
    wait_for(lambda: intact_steps(checkpoints)[-1] > newest, 240, "a checkpoint from the resumed run", second)
    delay = float(rng.uniform(0.0, 1.0))
    time.sleep(delay)
    if second.proc.poll() is None:
        second.kill()
    logged, newest, lost = lost_steps(run_dir)
    record_fault("SIGKILL of a resumed run at a random moment",
                 f"`--resume` of the run above, killed {delay:.2f} s after its first new checkpoint",
                 f"{lost} step(s) redone (logged step {logged}, newest intact checkpoint {newest})")
    assert f"resuming from {checkpoints / 'step-'}" in second.output
    assert lost <= EVERY, (logged, newest)

    # (3) the newest checkpoint is then corrupted on disk: bytes flipped in the middle of state.pt
    corrupt = checkpoints / f"step-{newest:08d}"
    with open(corrupt / "state.pt", "r+b") as f:
        f.seek((corrupt / "state.pt").stat().st_size // 2)
        chunk = bytearray(f.read(16))
        f.seek(-16, 1)
        f.write(bytes(b ^ 0xFF for b in chunk))
    third = cli(resume_argv(run_dir), "attempt3")
    assert third.wait(300) == 0, third.output[-3000:]
    record_fault("corrupt newest checkpoint (16 bytes of state.pt inverted) found by `--resume`",
                 "bytes flipped after the kill above, then `--resume`",
                 f"step {newest} redone from step {newest - 1}; the log names the corrupt folder")
    assert f"checkpoint {corrupt} is unusable: state.pt does not match its recorded sha256" in third.output
    assert f"resuming from {checkpoints / f'step-{newest - 1:08d}'}" in third.output

    # the interrupted run ends exactly where the uninterrupted one does
    assert reference.wait(300) == 0, reference.output[-3000:]
    ref_folder, ref_state = newest_state(tmp_path / "reference")
    folder, state = newest_state(run_dir)
    assert folder.name == ref_folder.name == f"step-{STEPS:08d}"
    assert_same_training_state(ref_state, state)
    assert json.loads((run_dir / "provenance.json").read_text())["status"] == "finished"
    # disk use stays bounded: no temporary folders of killed writers, no more than keep_checkpoints
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"step-{s:08d}" for s in range(STEPS - 2, STEPS + 1)]
    record_fault("two crashes + one corrupt checkpoint, end state",
                 "final checkpoint of the interrupted run vs an uninterrupted run with the same command",
                 "nothing: model, D, both Adam states and the balancing state are bit-identical at step "
                 f"{STEPS}; no temporary folders left")


@pytest.mark.parametrize("damage", ["state flipped", "state truncated", "state missing", "meta missing",
                                    "meta not json", "meta not utf-8", "meta null"])
def test_damaged_newest_checkpoint_falls_back_with_a_message(tmp_path, caplog, damage, record_fault):
    for step in (1, 2):
        checkpoint.save(tmp_path, step, {"step": step, "weights": torch.full((4096,), float(step))})
    newest = tmp_path / "step-00000002"
    state, meta = newest / "state.pt", newest / "meta.json"
    if damage == "state flipped":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        state.write_bytes(bytes(data))
    elif damage == "state truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    elif damage == "state missing":
        state.unlink()
    elif damage == "meta missing":
        meta.unlink()
    elif damage == "meta not json":
        meta.write_text(meta.read_text()[:-5])
    elif damage == "meta not utf-8":
        data = bytearray(meta.read_bytes())
        data[3] |= 0x80  # a flipped high bit makes invalid UTF-8
        meta.write_bytes(bytes(data))
    elif damage == "meta null":
        meta.write_text("null")
    with caplog.at_level(logging.WARNING, logger="repro.checkpoint"):
        folder, loaded = checkpoint.load_latest(tmp_path)
    record_fault(f"newest checkpoint damaged: {damage}", "`checkpoint.load_latest` on two checkpoints",
                 "the damaged one only; the previous checkpoint is loaded")
    assert folder.name == "step-00000001" and loaded["step"] == 1
    assert f"checkpoint {newest} is unusable" in caplog.text and "falling back to the previous one" in caplog.text
    with pytest.raises(checkpoint.CheckpointError, match="step-00000002 is unusable"):
        checkpoint.load(newest)


def test_temporary_folders_of_killed_writers_are_removed(tmp_path):
    """A writer killed mid-save leaves `.tmp-step-N-PID` (a whole state.pt): the next save removes it, but
    never the folder of a writer that is still alive."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp-step-00000005-{int(dead.stdout)}"
    live = tmp_path / f".tmp-step-00000005-{1}"  # pid 1 is alive
    for folder in (stale, live):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"x" * 1000)
    checkpoint.save(tmp_path, 4, {"step": 4})
    assert not stale.exists() and live.exists()
    assert checkpoint.load_latest(tmp_path)[0].name == "step-00000004"
