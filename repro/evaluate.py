"""`python -m repro.evaluate RUN_DIR [--n 256] [--mv-steps 200] [--out RUN_DIR/eval]`: metrics, figures, tables.

Measures one run folder's newest intact checkpoint (or `--step`'s) on the first `--n` images of its `eval_data` and
writes `metrics.json`, `metrics.md` and the figures into `--out`: `repro.evaluation.evaluate`, which says what is
measured and how.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from repro.errors import cli
from repro.evaluation.evaluate import EvalOptions, evaluate
from repro.evaluation.scores import EvalError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print the usage too)
        raise EvalError(message)


def parse_args(argv: list[str]) -> EvalOptions:
    parser = _Parser(prog="python -m repro.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="run folder written by python -m repro.train")
    parser.add_argument("--n", type=int, default=256, help="evaluation images (the first n of config.eval_data)")
    parser.add_argument("--mv-steps", type=int, default=0,
                        help="also run Mahendran & Vedaldi for this many steps, e.g. 200 (default 0: no)")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/eval)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: the run's own choice")
    parser.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest intact one), e.g. "
                        "to compare runs at equal training")
    parser.add_argument("--figure-images", type=int, default=8, help="columns of the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("n", "batch_size", "figure_images"):
        if getattr(args, name) < (2 if name == "n" else 1):
            least = 2 if name == "n" else 1
            raise EvalError(f"--{name.replace('_', '-')} must be ≥ {least}, got {getattr(args, name)}")
    if args.mv_steps < 0:
        raise EvalError(f"--mv-steps must be ≥ 0, got {args.mv_steps}")
    return EvalOptions(run_dir=args.run_dir, out=args.out or args.run_dir / "eval", n=args.n,
                       batch_size=args.batch_size, mv_steps=args.mv_steps, device=args.device, step=args.step,
                       figure_images=args.figure_images, progress=not args.no_progress,
                       command="python -m repro.evaluate " + " ".join(shlex.quote(a) for a in argv))


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_args(argv)
    record = evaluate(options)  # EvalError, DataError, AssetError, WeightsError: one line, exit 2 (`cli`)
    for result in record["results"]:
        print(f"{result['method']}: image error {result['image_error_pct']:.1f} %, "
              f"feature error {result['feature_error_pct']:.1f} %")
    print(f"wrote {options.out / 'metrics.json'}, {options.out / 'metrics.md'} and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
