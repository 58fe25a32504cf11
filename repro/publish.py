"""`python -m repro.publish RUN_DIR [DEST]`: copy a run's small, reviewable artefacts into `results/`.

Config, provenance, training statistics, a few grids and the evaluation go to `results/<preset>/<run name>/`
(default DEST); `--generator [--half]` also writes the trained generator alone as `generator.pt`
(`repro.reporting.publish`, which lists what is copied and why).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.errors import cli, user_input
from repro.reporting.publish import publish


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.publish", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path, nargs="?")
    parser.add_argument("--grids", type=int, default=2, help="intermediate grids to keep (besides grid-latest)")
    parser.add_argument("--generator", action="store_true", help="also write generator.pt (the generator alone)")
    parser.add_argument("--half", action="store_true", help="store generator.pt in float16 (half the size)")
    args = parser.parse_args(argv)
    with user_input(FileNotFoundError, ValueError):
        print(publish(args.run_dir, args.dest, args.grids, args.generator, args.half))
    return 0


if __name__ == "__main__":
    sys.exit(main())
