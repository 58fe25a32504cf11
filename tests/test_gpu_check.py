"""The prepared GPU check (bench/gpu_check.py): what it carries, how it records sections, and the CPU smoke
run with Ray, onnx2torch and lpips unimportable, as on the lent GPU machine."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import gpu_check
from bench.gpu_check import Check, prepare_carry

REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "bench" / "device_python"


def imports(module: str, blocked: bool, find_only: bool = False) -> subprocess.CompletedProcess:
    """`import module` (or only finding it, which imports nothing) in a fresh Python, blocker on or off."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BLOCKER)] * blocked + [str(REPO)]))
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)" if find_only \
        else f"import {module}"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["ray", "ray.train", "onnx2torch", "lpips"])
def test_the_device_python_cannot_import_what_the_gpu_machine_lacks(module):
    done = imports(module, blocked=True)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr and "blocked" in done.stderr
    if importlib.util.find_spec(module.split(".")[0]) is not None:  # installed here: the block is what stops it
        assert imports(module, blocked=False, find_only=True).returncode == 0
        assert imports(module, blocked=True, find_only=True).returncode != 0
    assert imports("json, bench.gpu_check", blocked=True).returncode == 0, "everything else still imports"


def test_the_carry_holds_the_images_the_weights_and_the_commit(tmp_path):
    manifest = prepare_carry(tmp_path / "carry", n_images=5)
    images = sorted(p.name for p in (tmp_path / "carry" / "assets" / "imagenet-subset").iterdir())
    assert images == ["n01440764.jpg", "n01443537.jpg", "n01484850.jpg", "n01491361.jpg", "n01494475.jpg"]
    assert (tmp_path / "carry" / "deepsim-cache" / "weights" / "alexnet_tv.pt").stat().st_size > 9_000_000
    assert (tmp_path / "carry" / "COMMIT").read_text().strip() == manifest["commit"] != "unknown"
    on_disk = sum(p.stat().st_size for p in (tmp_path / "carry").rglob("*") if p.is_file() and p.name != "manifest.json")
    assert manifest["bytes"] == on_disk <= gpu_check.CARRY_LIMIT


def test_a_carry_over_its_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "CARRY_LIMIT", 5 * 2**20)  # the weights alone are ~9.4 MiB
    with pytest.raises(ValueError, match="over 5 MiB"):
        prepare_carry(tmp_path / "carry", n_images=2)


def test_every_section_is_recorded_even_when_one_fails_or_overruns(tmp_path):
    check = Check(tmp_path, budget_s=1.5, min_section_s=0.1, grace_s=0.2)
    check.results.update(created="now", commit="abc", command="test", smoke=True, environment={"device": "cpu"})

    def broken(_allowed):
        raise RuntimeError("a section that breaks")

    started = time.monotonic()
    check.section("broken", 1, broken)
    check.section("overrun", 0.3, lambda allowed: time.sleep(10) or {})  # interrupted at 0.3 + 0.2 s
    check.section("fine", 1, lambda allowed: {"value": 1})
    written = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert written["broken"]["status"] == "failed" and "a section that breaks" in written["broken"]["error"]
    assert written["overrun"]["status"] == "failed" and "TimeoutError" in written["overrun"]["error"]
    assert written["fine"]["status"] == "ok" and written["fine"]["value"] == 1
    assert time.monotonic() - started < 2
    time.sleep(max(0.0, check.left()))
    check.section("late", 10, lambda allowed: {"value": 2})
    assert json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["late"]["status"] == "skipped"
    assert "broken failed, overrun failed, fine ok, late skipped" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_cpu_smoke_passes_with_ray_onnx2torch_and_lpips_unimportable(tmp_path):
    """`bash bench/gpu_check.sh --cpu-smoke` on a carry like the device's (~1 min on 2 shared cores)."""
    carry = tmp_path / "carry"
    prepare_carry(carry, n_images=70)  # more than one batch of 64
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("DEEPSIM_ASSETS", None), env.pop("DEEPSIM_CACHE", None)
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu-smoke", "--carry", str(carry)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert {k: v["status"] for k, v in results["sections"].items()} == {
        "peak": "ok", "step": "ok", "loader": "ok", "loader-gpu-decode": "ok", "paper-pool5": "ok",
        "resume-on-cpu": "ok", "compile": "ok"}
    environment = results["environment"]
    assert not (environment["has_ray"] or environment["has_onnx2torch"] or environment["has_lpips"])
    assert results["images"] == str(carry / "assets" / "imagenet-subset")
    assert results["commit"] not in ("", "unknown") and results["smoke"] is True
    step = results["sections"]["step"]
    assert [step[row]["status"] for row in gpu_check.STEP_ROWS] == ["ok"] * 4
    assert step["fp32"]["fp32_flags"] == {"matmul": "ieee", "cudnn_conv": "ieee"}
    assert step["tf32"]["fp32_flags"] == {"matmul": "tf32", "cudnn_conv": "tf32"} and step["tf32"]["peak_kind"] == "tf32"
    assert step["fp32"]["projected_days_1M_iterations_x64"] > 0 and step["fp32"]["peak_kind"] == "fp32"
    assert step["bf16"]["peak_kind"] == "bf16" and step["bf16"]["fraction_of_matmul_peak"] > 0
    assert results["sections"]["paper-pool5"]["encoder"] == "alexnet", "the carried weights were used"
    assert results["sections"]["resume-on-cpu"]["weights_equal_after_load"] is True
    assert (out / "grid-paper-pool5.webp").is_file() and (out / "gpu_check.log").is_file()
