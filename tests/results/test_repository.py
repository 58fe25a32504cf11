"""The repository stays small enough to travel (a GPU machine takes at most 64 MiB of working tree), its
committed figures are WebP, and what results/ links to is there."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRACKED_LIMIT = 22 * 2**20  # 80 MiB of PNG figures before issue 24, 24.9 MiB as JPEG, ~18 MiB as WebP
FIX_FIGURES = "python -m repro.compress_figures results"

pytestmark = pytest.mark.results


def tracked_bytes(root: Path) -> int | None:
    """Bytes of every file git tracks under `root` (as `git ls-files -z | xargs -0 du -cb` counts them);
    None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60)
    if listing.returncode != 0:
        return None
    paths = [root / name for name in listing.stdout.decode().split("\0") if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def test_the_tracked_tree_stays_under_22_mib():
    size = tracked_bytes(REPO)
    if size is None:
        pytest.skip("not a git checkout (a copy without .git, e.g. on a device machine)")
    assert size <= TRACKED_LIMIT, (
        f"the tracked tree is {size / 2**20:.1f} MiB, over {TRACKED_LIMIT / 2**20:.0f} MiB: figures belong in "
        f"WebP ({FIX_FIGURES}), weights and data outside git")


def test_tracked_bytes_counts_what_git_tracks_and_nothing_else(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert tracked_bytes(tmp_path) is None, "not a checkout"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "big.bin").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "untracked.bin").write_bytes(b"\0" * 5_000_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a b.txt").write_text("x" * 1000)  # a space in the name
    subprocess.run(["git", "add", "big.bin", "sub"], cwd=tmp_path, check=True)
    assert tracked_bytes(tmp_path) == 3_001_000


def committed_figures_not_webp(root: Path) -> list[str] | None:
    """Figures git tracks under root/results/ in a format other than WebP (PNG, JPEG); None outside a checkout."""
    if shutil.which("git") is None:
        return None
    listing = subprocess.run(["git", "ls-files", "-z", "results"], cwd=root, capture_output=True, timeout=60)
    if listing.returncode != 0:
        return None
    return [name for name in listing.stdout.decode().split("\0") if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg")]


def test_every_figure_committed_under_results_is_webp():
    others = committed_figures_not_webp(REPO)
    if others is None:
        pytest.skip("not a git checkout (a copy without .git, e.g. on a device machine)")
    assert not others, (f"{len(others)} figures under results/ are not WebP ({', '.join(others[:5])}): run "
                        f"`{FIX_FIGURES}` and commit what it changes")


def test_a_committed_png_or_jpeg_would_be_found(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for name in ("results/a/grid-latest.webp", "results/a/eval/x.jpg", "results/b.PNG", "results/c.svg", "docs/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"figure")
    (tmp_path / "results" / "untracked.png").write_bytes(b"figure")
    subprocess.run(["git", "add", "results/a", "results/b.PNG", "results/c.svg", "docs"], cwd=tmp_path, check=True)
    assert sorted(committed_figures_not_webp(tmp_path)) == ["results/a/eval/x.jpg", "results/b.PNG"]


def markdown_links(text: str) -> list[str]:
    return [t.split("#")[0] for t in re.findall(r"\]\(([^()\s]+)\)", text) if "://" not in t and not t.startswith("#")]


def test_every_link_and_figure_in_results_resolves():
    results = REPO / "results"
    missing = [f"{md.relative_to(REPO)} → {target}" for md in results.rglob("*.md")
               for target in markdown_links(md.read_text()) if not (md.parent / target).exists()]
    for record_path in results.rglob("metrics.json"):
        record = json.loads(record_path.read_text())
        named = list(record.get("figures", {}).values())
        if isinstance(record.get("results"), dict):  # repro.compare_autoencoders: model → result, VAEs' samples
            named += [result["samples"] for result in record["results"].values() if "samples" in result]
        missing += [f"{record_path.relative_to(REPO)} → {name}" for name in named if not (record_path.parent / name).exists()]
    assert not missing, missing


def test_markdown_links_are_found_so_a_broken_one_would_fail():
    page = "see [grid](a/grid-latest.jpg) and ![x](figures/x.jpg#top), not [web](https://example.org)"
    assert markdown_links(page) == ["a/grid-latest.jpg", "figures/x.jpg"]
