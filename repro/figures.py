"""`python -m repro.figures RUN_DIR... --out FILE.png [--n 8] [--step N]`: runs side by side on the same images.

One row of originals, then one row per run: its reconstructions of the first `n` evaluation images of the
first run's `eval_data`, at that run's resolution (all runs must share it), each row labelled with the
run's preset, method and checkpoint step (`--step`: every run's checkpoint of that step, so that runs which
trained for different lengths are shown at equal training; default: each run's newest). This is the figure
the paper makes for its comparisons (Fig. 1, Fig. 3: the same images through each method), so that
"sharper than" is something one looks at, not only a number.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def write_grid(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor, columns: int = 4) -> None:
    """Pairs (target | reconstruction) side by side, `columns` pairs per row."""
    from torchvision.utils import save_image

    pairs = torch.stack([targets, reconstructions.clamp(0, 1)], 1).flatten(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(pairs, path, nrow=2 * columns, padding=2, pad_value=1.0)


def labelled_rows(rows: list[tuple[str, torch.Tensor]], label_width: int = 90) -> "Image.Image":
    """One PIL image: each row a label then its images (N, 3, R, R) RGB [0, 1] side by side."""
    from PIL import Image, ImageDraw
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    strips = [to_pil_image(make_grid(images.clamp(0, 1), nrow=images.shape[0], padding=2, pad_value=1.0))
              for _, images in rows]
    width = label_width + max(s.width for s in strips)
    canvas = Image.new("RGB", (width, sum(s.height for s in strips)), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for (label, _), strip in zip(rows, strips):
        canvas.paste(strip, (label_width, top))
        draw.multiline_text((4, top + strip.height // 2 - 6 * (label.count("\n") + 1)), label, fill="black")
        top += strip.height
    return canvas


def side_by_side(run_dirs: list[Path], n: int, device: str | None = None,
                 step: int | None = None) -> tuple["Image.Image", list[dict]]:
    """Originals and each run's reconstructions (clamped to [0, 1]) of the same n evaluation images, and
    what each row shows (run folder, preset, method, checkpoint step)."""
    from repro.evaluate import display_path, load_eval_images, method_of
    from repro.runs import load_run

    runs = [load_run(folder, device, step) for folder in run_dirs]
    resolutions = {run.config.resolution for run in runs}
    if len(resolutions) > 1:
        raise ValueError(f"runs differ in resolution ({sorted(resolutions)}); compare runs of one resolution")
    images = load_eval_images(runs[0].config, n)[0]
    rows = [("original", images)]
    for run in runs:
        model = run.parts.model
        with torch.no_grad():
            reconstructions = model(images.to(next(model.parameters()).device))[0].float().cpu()
        rows.append((f"{run.config.preset}\n{method_of(run.config)}\nstep {run.step}", reconstructions))
    shown = [{"run": display_path(run.folder), "preset": run.config.preset, "method": method_of(run.config),
              "step": run.step, "checkpoint": display_path(run.checkpoint)} for run in runs]
    return labelled_rows(rows, label_width=130), shown


def provenance(argv: list[str], n: int, runs: list[dict]) -> dict:
    """How the figure was made: command, commit, the rows' runs and steps, the images shown."""
    from repro import provenance as prov

    return prov.record(prov.command("repro.figures", argv),
                       images=f"the first {n} of the first run's eval_data (sorted paths)", rows=runs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from repro.provenance import git_commit

    git_commit()  # pin the commit of the code now running
    parser = argparse.ArgumentParser(prog="python -m repro.figures", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run folders written by python -m repro.train")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--n", type=int, default=8, help="evaluation images per row (default 8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: each run's own choice")
    parser.add_argument("--step", type=int, help="each run's checkpoint of this step (default: its newest)")
    args = parser.parse_args(argv)
    from repro.checkpoint import CheckpointError
    from repro.data import DataError

    if args.n < 1:
        print(f"error: --n must be ≥ 1, got {args.n}", file=sys.stderr)
        return 2
    try:
        figure, figure_runs = side_by_side(args.run_dirs, args.n, args.device, args.step)
    except (CheckpointError, FileNotFoundError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    record = provenance(argv, args.n, figure_runs)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(args.run_dirs)} runs × {args.n} images → {args.out} (+ {args.out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
