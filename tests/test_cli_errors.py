"""One way to fail: every command line, fed one bad input, prints one line `error: …` on stderr and exits 2.

Each command is called in-process (`main(argv)`), with an input that is refused before any work: a run
folder or file that is not there, a file that is not what it should be, an unknown name. The table below
lists every command; a second test reads the sources and fails when a module with a top-level `def main`
under repro/, tune/ or bench/ is missing from it, so that a new command cannot be forgotten.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = Path(__file__)  # a text file, handed over where an image, a model or a record is expected


def _missing(tmp: Path, name: str = "missing") -> str:
    return str(tmp / name)


# module → (argv for a bad input, built in a fresh temporary folder; a word the error line names)
COMMANDS = {
    "repro.collapse": (lambda t: [_missing(t)], "missing"),
    "repro.colour_check": (lambda t: [_missing(t), "--out", str(t / "c.json")], "missing"),
    "repro.compare_autoencoders": (lambda t: ["--losses", "bogus", "--dry-run"], "bogus"),
    "repro.compare_optimizers": (lambda t: ["--generator", _missing(t, "g.pt"), "--out", str(t / "o")], "g.pt"),
    "repro.compress_figures": (lambda t: [_missing(t)], "missing"),
    "repro.data.prewarp": (lambda t: [_missing(t), str(t / "out")], "missing"),
    "repro.evaluate": (lambda t: [_missing(t)], "missing"),
    "repro.features": (lambda t: [str(TEXT.with_suffix(".jpg")), "--out", str(t / "f.npz")], ".jpg"),
    "repro.figures": (lambda t: [_missing(t), "--out", str(t / "f.webp")], "missing"),
    "repro.invert": (lambda t: ["--generator", _missing(t, "g.pt"), "--features", str(TEXT), "--out", str(t / "o")],
                     "g.pt"),
    "repro.publish": (lambda t: [_missing(t)], "missing"),
    "repro.released_generator": (lambda t: [str(TEXT), str(TEXT), str(t / "g.pt")], TEXT.name),
    "repro.report": (lambda t: ["--out", str(t / "no-folder" / "README.md")], "no-folder"),
    "repro.sample": (lambda t: [_missing(t)], "missing"),
    "repro.shipped": (lambda t: [_missing(t)], "missing"),
    "repro.spectra": (lambda t: [_missing(t, "grid.png"), "--out", str(t / "s.json")], "grid.png"),
    "repro.synthesize": (lambda t: ["--generator", _missing(t, "g.pt"), "--unit", "1", "--out", str(t / "o")], "g.pt"),
    "repro.train": (lambda t: ["--preset", "smoke", "--set", "bogus_key=1", "--dry-run"], "bogus_key"),
    "repro.vae_probe": (lambda t: ["--preset", "bogus-preset"], "bogus-preset"),
    "repro.weights": (lambda t: ["fetch"], "cache"),  # DEEPSIM_CACHE is a file (set in the test)
    "tune.search": (lambda t: ["--preset", "bogus-preset", "--dry-run"], "bogus-preset"),
    "bench.gpu_check": (lambda t: ["--prepare", "--carry", str(t / "carry")], "weights"),  # none cached (test)
    "bench.scale_data": (lambda t: ["listing", "--root", _missing(t)], "missing"),
    "bench.term_balance": (lambda t: ["--run", _missing(t)], "missing"),
    "bench.throughput": (lambda t: ["--variants", "bogus", "--out", str(t / "perf")], "bogus"),
    "converters.__main__": (lambda t: ["verify", str(TEXT), str(TEXT)], TEXT.name),
}


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of `module.main(argv)`, whether it returns or raises SystemExit; any other
    exception fails the test (a traceback for the user)."""
    main = importlib.import_module(module).main
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_a_bad_input_is_one_error_line_and_exit_2(module, tmp_path, monkeypatch, capsys):
    if module == "repro.weights":  # a cache that cannot be a folder
        (tmp_path / "cache-is-a-file").write_text("not a folder\n")
        monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "cache-is-a-file"))
    if module == "bench.gpu_check":  # no pretrained weights cached to carry
        monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path / "empty-cache"))
    build_argv, named = COMMANDS[module]
    status, err = run_main(module, build_argv(tmp_path), capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2, f"{module}: exit {status}\n{err}"
    # one `error:` line and no traceback (a library's import-time warning may precede it)
    assert len(errors) == 1 and "Traceback" not in err, f"{module}: expected one `error:` line:\n{err}"
    assert err.strip().splitlines()[-1] == errors[0], f"{module}: the error line should come last:\n{err}"
    assert named in errors[0], f"{module}: the error line should name {named!r}: {errors[0]}"


def commands_in_tree() -> set[str]:
    """Modules under repro/, tune/ and bench/ that define `main` at top level (read from the source)."""
    found = set()
    for package in ("repro", "tune", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_every_command_is_in_the_table():
    found = commands_in_tree()
    assert "repro.train" in found and "bench.gpu_check" in found  # the scan sees commands at all
    missing = sorted(found - set(COMMANDS))
    assert not missing, f"commands without a bad-input case in COMMANDS: {missing}"


# Every command that takes a run folder: its argv given the folder `run` and a temporary folder `t`.
RUN_FOLDER_COMMANDS = {
    "repro.collapse": lambda run, t: [run],
    "repro.colour_check": lambda run, t: [run, "--out", str(t / "c.json")],
    "repro.evaluate": lambda run, t: [run],
    "repro.figures": lambda run, t: [run, "--out", str(t / "f.webp")],
    "repro.publish": lambda run, t: [run, str(t / "published")],
    "repro.sample": lambda run, t: [run],
    "repro.shipped": lambda run, t: [run],
    "repro.train": lambda run, t: ["--resume", run, "--dry-run"],
    "bench.term_balance": lambda run, t: ["--run", run],
}


@pytest.mark.parametrize("module", sorted(RUN_FOLDER_COMMANDS))
@pytest.mark.parametrize("damage", ["empty", "bad-json"])
def test_one_rule_says_what_is_a_run_folder(module, damage, tmp_path, capsys):
    """`repro.runs.run_config` is the one rule: an empty folder and one whose config.json is not JSON get
    the same sentence from every command that takes a run folder, before any model is built."""
    run = tmp_path / "run"
    run.mkdir()
    if damage == "bad-json":
        (run / "config.json").write_text("{ not json")
    status, err = run_main(module, RUN_FOLDER_COMMANDS[module](str(run), tmp_path), capsys)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert status == 2, f"{module}: exit {status}\n{err}"
    expected = "is not a run folder (no config.json)" if damage == "empty" else "config.json is not JSON"
    assert line.startswith("error: ") and expected in line, f"{module}: {line}"
