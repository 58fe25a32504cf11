"""`python -m repro.figures RUN_DIR... --out FILE.webp [--n 8] [--step N]`: runs side by side on the same images.

One row of originals, then one row per run (its reconstructions of the same evaluation images, labelled with its
preset, method and checkpoint step): `repro.evaluation.figures.side_by_side`, which says how the images are chosen.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro import provenance as prov
from repro.errors import UsageError, cli, user_input
from repro.evaluation.figures import provenance, side_by_side
from repro.grids import save_figure


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prov.git_commit()  # pin the commit of the code now running
    parser = argparse.ArgumentParser(prog="python -m repro.figures", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run folders written by python -m repro.train")
    parser.add_argument("--out", type=Path, required=True, help="figure to write (.webp; .png for lossless)")
    parser.add_argument("--n", type=int, default=8, help="evaluation images per row (default 8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: each run's own choice")
    parser.add_argument("--step", type=int, help="each run's checkpoint of this step (default: its newest)")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise UsageError(f"--n must be ≥ 1, got {args.n}")
    with user_input(FileNotFoundError, ValueError):  # CheckpointError, DataError: user errors already
        figure, figure_runs = side_by_side(args.run_dirs, args.n, args.device, args.step)
    save_figure(figure, args.out)
    record = provenance(argv, args.n, figure_runs)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(args.run_dirs)} runs × {args.n} images → {args.out} (+ {args.out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
