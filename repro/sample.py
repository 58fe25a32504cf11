"""`python -m repro.sample RUN_DIR --n 64 [--seed 0] [--out FILE.webp]`: samples of a trained VAE.

As the paper samples its VAEs (§4.2, Fig. 8): z = ε ~ N(0, I), decoded by the decoder. The latent draws
come from a `torch.Generator` seeded with `--seed`, so the same run and seed give the same grid
(`repro.evaluation.figures.sample_images`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.errors import UsageError, cli, user_input
from repro.evaluation.figures import sample_images, write_samples
from repro.grids import FIGURE_SUFFIX
from repro.runs import load_run, run_config


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.sample", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder of a model=vae run (config.json + checkpoints/)")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent draws z ~ N(0, I)")
    parser.add_argument("--out", type=Path, help="figure to write (default RUN_DIR/samples-seed<SEED>.webp; .png for lossless)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the run's device rule)")
    args = parser.parse_args(argv)

    model_kind = run_config(args.run_dir).get("model", "inversion")
    if model_kind != "vae":
        raise UsageError(f"{args.run_dir} is a model={model_kind} run; sampling needs a model=vae run")
    if args.n < 1:
        raise UsageError(f"--n must be ≥ 1, got {args.n}")

    with user_input(FileNotFoundError, ValueError):  # CheckpointError: a user error already
        run = load_run(args.run_dir, device=args.device)
    images = sample_images(run.parts.model, args.n, args.seed)
    out = args.out or args.run_dir / f"samples-seed{args.seed}{FIGURE_SUFFIX}"
    write_samples(out, images)
    print(f"{args.n} samples of {args.run_dir} (step {run.step}, seed {args.seed}) → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
