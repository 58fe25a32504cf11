"""What a new user trips on with `python -m repro.train`: each bad input gives one line `error: …`, exit 2,
and leaves nothing behind (no run folder written, an existing one untouched)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import precision
from repro.data import list_images
from repro.precision import PRECISIONS
from repro.train import main

ROOT = Path(__file__).resolve().parents[1]


def error_line(stderr: str) -> str:
    """The one `error: …` line of a refused command: the last line, no traceback, no second error (INFO log
    lines before it, e.g. a folder being listed, are allowed)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert sum(line.startswith("error: ") for line in lines) == 1 and "Traceback" not in stderr, stderr
    return lines[-1]


@pytest.fixture()
def two_images(tmp_path, assets):
    folder = tmp_path / "two"
    folder.mkdir()
    for f in list_images(assets / "caltech101" / "pizza")[:2]:
        shutil.copy(f, folder / f.name)
    return folder


def test_fewer_images_than_one_batch_exits_2_within_seconds(tmp_path, two_images):
    """It used to hang forever: the loader dropped the incomplete batch and every epoch was empty."""
    run = tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "repro.train", "--preset", "smoke", "--launcher", "local",
                           "--set", f"train_data={two_images}", "--run-dir", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert time.monotonic() - started < 60
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr)
    assert str(two_images) in line and "one batch of 4" in line
    assert not run.exists()  # nothing written


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("launcher", ["local", "ray"])
def test_a_non_empty_run_folder_is_refused_unless_resumed(tmp_path, capsys, launcher):
    """A second run into the same --run-dir used to overwrite config.json, append its steps to the old
    stats.jsonl and leave its checkpoints beside the old ones (which --resume then took). Refused before any
    worker (or Ray) starts, with both launchers; the folder is left exactly as it was."""
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000004").mkdir(parents=True)
    (run / "config.json").write_text('{"preset": "smoke"}')
    (run / "stats.jsonl").write_text('{"step": 3}\n{"step": 4}\n')
    before = snapshot(run)
    status = main(["--preset", "smoke", "--launcher", launcher, "--no-progress", "--run-dir", str(run)])
    assert status == 2
    line = error_line(capsys.readouterr().err)
    assert f"run folder {run} is not empty" in line and f"--resume {run}" in line
    assert snapshot(run) == before
    (tmp_path / "empty").mkdir()  # an empty folder (made beforehand) is no run: accepted up to the launch
    from repro.train import check_inputs, parse_args, resolve

    args = parse_args(["--preset", "smoke", "--run-dir", str(tmp_path / "empty")])
    check_inputs(*resolve(args)[:1], args, str(tmp_path / "empty"))


def test_a_run_the_time_limit_stops_says_so_and_records_stopped(tmp_path, capsys):
    run = tmp_path / "run"
    status = main(["--preset", "smoke", "--launcher", "local", "--no-progress", "--run-dir", str(run),
                   "--set", "steps=50", "--set", "time_limit_min=1e-6", "--set", "threads=1",
                   "--set", "image_every=20", "--set", "checkpoint_every=20", "--set", "log_every=20"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.splitlines()[0] == f"run folder {run}"  # printed at the start, not only at the end
    record = json.loads((run / "provenance.json").read_text())
    assert record["status"] == "stopped" and record["stopped_at"] < 50 and record["steps"] == 50
    # the device's default path, resolved before config.json: run folder, provenance and checkpoints name it
    default = precision.default_precision("auto")
    saved = json.loads((run / "config.json").read_text())
    assert record["precision"] == default and {k: saved[k] for k in ("amp", "channels_last")} == PRECISIONS[default]
    assert f"stopped at step {record['stopped_at']} of 50 (time limit of 1e-06 min): run folder {run}" in out
    assert "finished" not in out


def test_a_failed_run_names_no_grid_that_does_not_exist(tmp_path, capsys, monkeypatch):
    import repro.train
    from repro.data import DataError

    def fails(config, run, args):
        raise DataError("every image of the training folder became unreadable")

    monkeypatch.setattr(repro.train, "launch_local", fails)
    run = tmp_path / "run"
    status = main(["--preset", "smoke", "--launcher", "local", "--no-progress", "--run-dir", str(run)])
    captured = capsys.readouterr()
    assert status == 1
    assert error_line(captured.err) == "error: every image of the training folder became unreadable"
    assert captured.out.splitlines()[-1].startswith(f"failed: DataError: run folder {run} (")
    assert "grid" not in captured.out and not (run / "grid-latest.webp").exists()
    assert json.loads((run / "provenance.json").read_text())["status"] == "failed: DataError"


def tiny_onnx(path: Path) -> Path:
    """A real ONNX classifier trunk, tiny: Conv(3→8, 3×3, stride 2) → Relu → MaxPool 2×2, taps conv/relu/pool."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["data", "w", "b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 64, 64])],
                              [helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["N", 8, 15, 15])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_dry_run_refuses_what_the_run_would_fail_on(tmp_path, capsys):
    """--dry-run used to accept these (and report `-32 images per rank` for --num-workers -1); each is now one
    line, exit 2, and nothing printed on stdout (no config, no plan) and no run folder."""
    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    cases = [
        (["--set", f"encoder_weights={text}"], "notes.txt is not a torch state dict file"),
        (["--set", "lr=-1"], "lr must be > 0, got -1.0"),
        (["--set", "lr=0"], "lr must be > 0"),
        (["--set", "eval_images=0"], "eval_images must be ≥ 1, got 0"),
        (["--set", "resolution=40"], "below the discriminator's minimum of 63 px"),
        (["--set", "resolution=40", "--set", "lambda_adv=0"], "too small for the encoder alexnet:pool5: it needs at least 63 px"),
        (["--set", "num_workers=-2"], "num_workers=-2: data loader workers are ≥ 0, or -1 for automatic"),
        (["--num-workers", "-1"], "--num-workers must be ≥ 1, got -1"),
        (["--num-workers", "0"], "--num-workers must be ≥ 1, got 0"),
    ]
    for argv, reason in cases:
        status = main(["--preset", "smoke", "--dry-run", *argv])
        captured = capsys.readouterr()
        assert status == 2, argv
        assert reason in error_line(captured.err), (argv, captured.err)
        assert captured.out == "", argv


def test_dry_run_takes_an_onnx_comparator_file_it_is_given(tmp_path, capsys):
    """With comparator=onnx and its file given, --dry-run used to claim the file was missing."""
    model = tiny_onnx(tmp_path / "tiny.onnx")
    argv = ["--preset", "smoke", "--dry-run", "--set", "comparator=onnx", "--set", f"comparator_weights={model}",
            "--set", "comparator_tap=pool"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f'"comparator_weights": "{model}"' in out and "checkpoint:" in out
    assert main(argv[:-1] + ["comparator_tap=fc9"]) == 2
    assert "comparator tap 'fc9' does not exist in onnx; choose from conv, relu, pool" in error_line(capsys.readouterr().err)


def test_a_missing_assets_folder_is_one_line_for_the_dry_run_and_the_run(tmp_path, capsys, monkeypatch):
    """AssetError (a RuntimeError) was not caught by --dry-run: a traceback. Both paths: one line, nothing written."""
    monkeypatch.setenv("DEEPSIM_ASSETS", str(tmp_path / "no-assets"))
    run = tmp_path / "run"
    for extra in (["--dry-run"], ["--launcher", "local", "--run-dir", str(run)]):
        assert main(["--preset", "smoke", *extra]) == 2
        captured = capsys.readouterr()
        assert f"shared assets not found at {tmp_path / 'no-assets'}" in error_line(captured.err)
        assert captured.out == ""
    assert not run.exists()


def test_dry_run_estimates_the_time_from_measured_steps(capsys):
    started = time.monotonic()
    assert main(["--preset", "smoke", "--dry-run", "--set", "threads=1", "--set", "steps=1000"]) == 0
    assert time.monotonic() - started < 30
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("time: ") and "s per step measured here (2 step(s) of 4 images on cpu, 1 thread(s))" in last
    per_step = float(last.split("time: ")[1].split(" s per step")[0])
    assert 0 < per_step < 30 and "for 1,000 steps" in last
    from repro.config import make_config
    from repro.plan import estimate_lines

    limited = make_config("smoke", {"steps": "3600", "time_limit_min": "14"})
    line = estimate_lines(limited, {"seconds_per_step": 0.5, "steps_timed": 2, "warm_up_included": False,
                                    "device": "cpu", "threads": 2, "batch_per_worker": 32})
    assert "→ ~30 min for 3,600 steps" in line and "the time limit of 14 min stops it near step 1,680" in line
