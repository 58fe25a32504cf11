"""`python -m repro.spectra GRID.webp... [--size 96] [--period 16] --out FILE.json`: blur and lattice, in frequency.

Per reconstruction grid (original | reconstruction pairs, as `python -m repro.evaluate` writes them): the share of
the originals' fine-scale power the reconstructions keep and its excess on G's up-sampling lattice
(`repro.evaluation.spectra`, which says why). Reads committed figures, so it measures runs whose checkpoints were
not published; WebP's compression touches originals and reconstructions alike.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from repro import provenance
from repro.assets import sha256_file
from repro.errors import cli, user_input
from repro.evaluation.spectra import grid_pairs, spectral_scores


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.spectra", description=__doc__.split("\n")[0])
    parser.add_argument("grids", nargs="+", type=Path, help="reconstruction grids (original | reconstruction)")
    parser.add_argument("--size", type=int, default=96, help="tile side in px (the runs' resolution)")
    parser.add_argument("--period", type=int, default=16, help="G's total up-sampling factor (CONV5*: 6×6 → 96 px)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started, rows = time.time(), []
    for path in args.grids:
        with user_input():
            originals, reconstructions = grid_pairs(path, args.size)
            scores = spectral_scores(reconstructions, originals, args.period)
        rows.append({"grid": str(path), "sha256": sha256_file(path), "images": len(originals),
                     **{key: round(value, 4) for key, value in scores.items()}})
        print(f"{path}: fine power {scores['fine_power_ratio']:.3f} of the originals', lattice excess "
              f"{scores['lattice_excess']:.2f} ({len(originals)} images)")
    record = {"period": args.period, "size": args.size, "grids": rows,
              "provenance": {"command": provenance.command("repro.spectra", argv or sys.argv[1:]),
                             "commit": provenance.git_commit(), "wall_time_s": round(time.time() - started, 1)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
