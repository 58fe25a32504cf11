"""Ray Train and Tune across nodes, on loopback only: a head with 0 CPUs and two worker "nodes" (1 CPU each,
each with its own temp folder) started by `ray.cluster_utils.Cluster` in this process; a 2-worker run with
`--storage` on a folder all nodes share survives the loss of a worker node (removed by this test, which
started its processes) once a replacement joins; a run folder only the driver has is refused before any
worker starts; a 2-trial Tune search keeps its trial artefacts under the storage.

The fast tests check the storage rules without a cluster (fake `ray.nodes()` entries, file:// URIs)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import checkpoint, storage
from repro.storage import StorageError
from repro.train import parse_args, run_location

REPO = Path(__file__).resolve().parents[1]


def test_weights_reach_a_node_without_them_checked_by_sha256(tmp_path, monkeypatch):
    import dataclasses
    import hashlib
    import tempfile

    ray = pytest.importorskip("ray")
    from repro.assets import AssetError
    from repro.config import make_config
    from repro.cluster.shipping import install_weights, ship_weights

    data = b"the driver's weights"
    monkeypatch.setattr(ray, "get", lambda ref: data)  # the object store's copy
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node"))
    config = dataclasses.replace(make_config("smoke", {}), encoder_weights=str(tmp_path / "only-on-driver.bin"))
    item = {"field": "encoder_weights", "path": config.encoder_weights, "sha256": hashlib.sha256(data).hexdigest(),
            "ref": None}
    installed = install_weights(config, [item])
    assert Path(installed.encoder_weights).read_bytes() == data and str(tmp_path / "node") in installed.encoder_weights
    with pytest.raises(AssetError, match="does not match its sha256"):
        install_weights(config, [{**item, "sha256": "0" * 64}])
    with pytest.raises(AssetError, match=r"only-on-driver.bin \(encoder_weights\) is missing on the driver"):
        ship_weights(config)
    assert not ray.is_initialized(), "nothing is put into the object store when a file is missing"


def node(alive: bool = True, node_id: str = "a" * 56) -> dict:
    return {"Alive": alive, "NodeID": node_id, "NodeManagerAddress": "127.0.0.1"}


# ---- fast: the rules, without a cluster ----------------------------------------------------------------------
def test_uris_are_kept_as_given_and_paths_made_absolute(tmp_path, monkeypatch):
    assert storage.normalise("s3://bucket/deep sim/runs") == "s3://bucket/deep sim/runs"
    assert storage.join("gs://bucket/runs/", "smoke", "x") == "gs://bucket/runs/smoke/x"
    assert storage.split("s3://bucket/runs/smoke/x") == ("s3://bucket/runs/smoke", "x")
    monkeypatch.chdir(tmp_path)
    assert storage.normalise("runs") == str(tmp_path / "runs")
    run = run_location(parse_args(["--storage", "s3://bucket/runs", "--run-dir", "a/b"]), "smoke")
    assert run == "s3://bucket/runs/a/b"
    run = run_location(parse_args(["--storage", "s3://bucket/runs"]), "smoke")
    assert re.fullmatch(r"s3://bucket/runs/smoke/\d{8}-\d{6}", run), run
    assert run_location(parse_args(["--resume", "s3://bucket/runs/smoke/x"]), "") == "s3://bucket/runs/smoke/x"
    from tune.search import parse_args as tune_args

    assert tune_args(["--storage", "s3://bucket/tune"]).storage == "s3://bucket/tune"
    assert tune_args(["--resume", "gs://bucket/tune/s"]).resume == "gs://bucket/tune/s"


def test_multi_node_cluster_needs_explicit_storage():
    two = [node(node_id="a" * 56), node(node_id="b" * 56), node(alive=False, node_id="c" * 56)]
    storage.require_shared("/home/me/runs/x", [node()], storage_given=False, address=None)  # one node: fine
    storage.require_shared("/home/me/runs/x", [node(), node(alive=False)], False, "auto")  # a dead node is no node
    storage.require_shared("s3://bucket/runs/x", two, storage_given=False, address="auto")
    storage.require_shared("/shared/runs/x", two, storage_given=True, address="auto")
    with pytest.raises(StorageError, match=r"has 2 alive nodes, but the run folder /home/me/runs/x is on this "
                                           r"machine's disk only; give --storage"):
        storage.require_shared("/home/me/runs/x", two, storage_given=False, address="auto")


def test_cli_refuses_a_uri_for_the_local_launcher(capsys):
    from repro.train import main

    assert main(["--launcher", "local", "--preset", "smoke", "--storage", "s3://bucket/runs"]) == 2
    assert "--launcher local writes to a local path, not s3://bucket/runs/smoke/" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--storage", "/x", "--run-dir", "/abs"]) == 2
    assert "must be relative to the storage" in capsys.readouterr().err


def test_a_new_run_refuses_a_folder_ray_already_has_a_run_in(tmp_path, capsys):
    from repro.train import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint_manager_snapshot.json").write_text("{}")
    assert main(["--preset", "smoke", "--run-dir", str(tmp_path / "run")]) == 2
    assert f"run folder {tmp_path / 'run'} is not empty: continue that run with --resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_file_uri_round_trip_through_the_mirror(tmp_path):
    """A URI run folder: files written under a node-local folder are uploaded once each change, and the
    files a resumed run appends to come back."""
    uri = "file://" + str(tmp_path / "remote" / "run")
    storage.write_text(storage.join(uri, "config.json"), '{"a": 1}')
    assert storage.read_text(storage.join(uri, "config.json")) == '{"a": 1}'
    assert storage.read_text(storage.join(uri, "nothing.json")) is None
    local = tmp_path / "local"
    (local / "grids").mkdir(parents=True)
    (local / "stats.jsonl").write_text('{"step": 1}\n')
    (local / "grids" / "step-1.png").write_bytes(b"png")
    mirror = storage.Mirror(local, uri)
    assert mirror.push() == ["grids/step-1.png", "stats.jsonl"]
    assert mirror.push() == []  # nothing changed
    with open(local / "stats.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    assert mirror.push() == ["stats.jsonl"]
    assert (tmp_path / "remote" / "run" / "stats.jsonl").read_text().count("step") == 2
    again = storage.Mirror(tmp_path / "other", uri)
    again.pull("stats.jsonl", "metrics.csv")  # metrics.csv absent: skipped
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["stats.jsonl"]


# ---- slow: a real loopback cluster ---------------------------------------------------------------------------
STEPS, EVERY = 24, 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    base = tmp_path_factory.mktemp("cluster")

    def worker_node(name: str):
        private = base / name
        private.mkdir()
        # each node's worker processes have their own temp folder (their "private disk") and an empty
        # weights cache: the pretrained weights must come from the driver
        return cluster.add_node(num_cpus=1, env_vars={"TMPDIR": str(private), "DEEPSIM_CACHE": str(private / "cache")})

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [worker_node("node-a"), worker_node("node-b")]
    cluster.wait_for_nodes()
    yield cluster, nodes, worker_node, base
    cluster.shutdown()
    assert not ray.is_initialized()


def cli(module: str, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def registered_step(run_dir: Path) -> int | None:
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.mark.slow
def test_local_only_run_folder_is_refused_before_any_worker(cluster, tmp_path):
    the_cluster, *_ = cluster
    started = time.monotonic()
    run = cli("repro.train", "--address", the_cluster.address, "--preset", "smoke", "--num-workers", "2",
              "--run-dir", str(tmp_path / "run"))
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 2, out
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "alive nodes, but the run folder" in error[0] and "give --storage" in error[0], out
    assert not (tmp_path / "run").exists() and "Started training worker group" not in out
    print(f"refused in {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_two_worker_run_survives_a_lost_node(cluster):
    the_cluster, nodes, worker_node, base = cluster
    shared = base / "shared-storage"
    started = time.monotonic()
    run = cli("repro.train", "--address", the_cluster.address, "--storage", str(shared), "--run-dir", "run",
              "--preset", "smoke", "--num-workers", "2", "--cpus-per-worker", "1", "--max-failures", "2",
              "--no-progress", "--set", f"steps={STEPS}", "--set", f"checkpoint_every={EVERY}",
              "--set", "keep_checkpoints=2", "--set", "image_every=6", "--set", "threads=1")
    run_dir = shared / "run"
    output: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: output.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 480  # a loaded 2-core machine took over 240 s to start the worker group once
    while registered_step(run_dir) is None and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_after = registered_step(run_dir)
    assert killed_after is not None and run.poll() is None, "".join(output)[-4000:]
    the_cluster.remove_node(nodes[0])  # its raylet and workers: processes this test started
    lost_at = time.monotonic() - started
    nodes[0] = worker_node("node-c")  # the replacement, with its own temp folder
    assert run.wait(300) == 0, "".join(output)[-4000:]
    reader.join(10)
    text = "".join(output)
    wall = time.monotonic() - started

    resumed = sorted({int(s) for s in re.findall(r"resuming after step (\d+) from", text)})
    assert len(resumed) == 1 and resumed[0] >= killed_after, text[-4000:]
    steps = [json.loads(line)["step"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))
    # Redone: the steps after the newest complete checkpoint in the run folder (Ray's registered one, or one
    # uploaded but not yet registered when the node was lost): at most one interval.
    assert len(steps) - len(set(steps)) <= EVERY, steps
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["status"] == "finished" and provenance["result"]["metrics"]["step"] == STEPS
    # the run folder is complete, on the storage: config, provenance, logs, grids, Ray's registered checkpoints
    assert {"config.json", "provenance.json", "stats.jsonl", "metrics.csv", "tensorboard", "grids",
            "grid-latest.webp", "checkpoints", "checkpoint_manager_snapshot.json"} <= {p.name for p in run_dir.iterdir()}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        f"step-{s:08d}" for s in (STEPS - EVERY, STEPS)]
    folder, state = checkpoint.load_latest(run_dir / "checkpoints")
    assert state["step"] == STEPS
    assert not any(k.startswith("encoder.") for k in state["model"]), "checkpoints hold the frozen encoder"
    # the nodes had no weights cache: each got the driver's copy of the pretrained encoder, sha256 checked
    received = sorted(p.relative_to(base).parts[0] for p in base.glob("node-*/deepsim-weights/*/weights/alexnet_tv.pt"))
    assert "node-b" in received and "node-c" in received, received
    # no checkpoint stays staged on a node's private temp folder (Ray deleted each after copying it; a killed
    # worker leaves at most its empty staging folder)
    staged = [p for p in base.glob("node-*/deepsim-checkpoints-*/**/*") if p.is_file()]
    assert not staged, staged
    print(f"node lost {lost_at:.1f} s in, after registered step {killed_after}; resumed after step {resumed[0]}; "
          f"{len(steps) - len(set(steps))} steps redone; wall {wall:.1f} s")


@pytest.mark.slow
def test_two_trial_search_keeps_artefacts_under_the_storage(cluster):
    the_cluster, _, _, base = cluster
    shared = base / "tune-storage"
    started = time.monotonic()
    search = cli("tune.search", "--address", the_cluster.address, "--storage", str(shared), "--name", "s",
                 "--preset", "smoke", "--trials", "2", "--scheduler", "fifo", "--eval-images", "2",
                 "--no-image-metrics", "--cpus-per-trial", "1", "--set", "steps=4", "--set", "checkpoint_every=2",
                 "--set", "eval_images=2")
    out, _ = search.communicate(timeout=400)
    assert search.returncode == 0, out[-4000:]
    experiment = shared / "s"
    rows = list(csv_rows(experiment / "results.csv"))
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows), rows
    for row in rows:
        run_dir = experiment / row["run_dir"]
        assert {"config.json", "provenance.json", "stats.jsonl", "grid-latest.webp"} <= set(os.listdir(run_dir))
    print(f"2-trial search on the cluster: {time.monotonic() - started:.1f} s")


def csv_rows(path: Path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


@pytest.mark.slow
def test_uri_storage_holds_the_whole_run_folder(cluster):
    """--storage as a URI (file://, which pyarrow treats like s3://): rank 0 logs into a node-local folder
    and uploads it after each report, Ray copies the checkpoints; the run folder is complete on the URI."""
    the_cluster, _, _, base = cluster
    uri = "file://" + str(base / "uri-storage")
    started = time.monotonic()
    run = cli("repro.train", "--address", the_cluster.address, "--storage", uri, "--run-dir", "run",
              "--preset", "smoke", "--num-workers", "2", "--cpus-per-worker", "1", "--no-progress",
              "--set", "steps=4", "--set", "checkpoint_every=2", "--set", "threads=1")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out[-4000:]
    assert f"run folder {uri}/run " in out
    run_dir = base / "uri-storage" / "run"
    assert {"config.json", "provenance.json", "stats.jsonl", "metrics.csv", "tensorboard", "grids",
            "grid-latest.webp", "checkpoints"} <= {p.name for p in run_dir.iterdir()}
    assert [json.loads(line)["step"] for line in (run_dir / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert checkpoint.load_latest(run_dir / "checkpoints")[1]["step"] == 4
    print(f"2-worker run on a file:// URI: {time.monotonic() - started:.1f} s")
