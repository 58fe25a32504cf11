"""`python -m repro.colour_check RUN_DIR... [--step N] [--n 256] --out FILE.json`: do reconstructions keep green?

Per run, the reconstructions' channel means against the originals' and how many green originals come back green,
and once the share of green pixels in the training and evaluation data (`repro.evaluation.colour`, which says why).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from repro import provenance
from repro.errors import cli, user_input
from repro.evaluation.colour import check


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.colour_check", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--step", type=int, help="the checkpoint of this step in every run (default: newest)")
    parser.add_argument("--n", type=int, default=256, help="evaluation images (the first n)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.time()
    commit = provenance.git_commit()
    with user_input():
        record = check(args.run_dirs, args.step, args.n)
    record["provenance"] = {"command": provenance.command("repro.colour_check", argv or sys.argv[1:]),
                            "commit": commit, "wall_time_s": round(time.time() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for run in record["runs"]:
        print(f"{run['run']} step {run['step']}: {run['green_reconstructed_green']} of {run['green_originals']} green "
              f"originals come back green (excess {run['green_excess_originals_255']:.1f} → "
              f"{run['green_excess_reconstructions_255']:.1f} of 255)")
    print(f"green pixels: {record['green_pixel_share']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
