"""`python -m repro.collapse RUN_DIR [RUN_DIR …]`: has a VAE (or autoencoder) collapsed to one image?

Per run (and per `--step`), on the held-out evaluation images: how often reconstructions find their own original,
and how spread reconstructions and samples are against the originals (`repro.evaluation.collapse`, which says when
a model counts as collapsed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro import provenance
from repro.evaluation.collapse import MIN_SPREAD, measure_run
from repro.errors import cli, user_input
from repro.evaluation.scores import IDENTIFICATION_FACTOR


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.collapse", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="autoencoder / VAE run folders")
    parser.add_argument("--n", type=int, default=256, help="evaluation images (the first n of config.eval_data)")
    parser.add_argument("--samples", type=int, default=64, help="samples z ~ N(0, I) per VAE")
    parser.add_argument("--step", type=int, nargs="+", default=[None],
                        help="checkpoints of these steps (default: each run's newest)")
    parser.add_argument("--out", type=Path, help="write the records as JSON here (with the command)")
    args = parser.parse_args(argv)

    with user_input(FileNotFoundError):  # CheckpointError, DataError: user errors already
        records = [measure_run(folder, args.n, args.samples, step=step)
                   for folder in args.run_dirs for step in args.step]
    for r in records:
        spread = "" if r["sample_spread"] is None else f", sample spread {r['sample_spread']:.3f}"
        print(f"{r['run']} step {r['step']}: NN = own {r['nn_own_image_pct']:.1f} % (chance {r['chance_pct']:.2f} %), "
              f"recon spread {r['recon_spread']:.3f}{spread} → {'COLLAPSED: ' + r['why'] if r['collapsed'] else 'not collapsed'}")
    if args.out:
        record = provenance.record(provenance.command("repro.collapse", sys.argv[1:] if argv is None else argv),
                                   min_spread=MIN_SPREAD, identification_factor=IDENTIFICATION_FACTOR, records=records)
        provenance.write(args.out.parent, record, args.out.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
