"""`python -m repro.figures RUN_DIR... --out FILE.webp [--n 8] [--step N]`: runs side by side on the same images.

One row of originals, then one row per run: its reconstructions of the first `n` evaluation images of the
first run's `eval_data`, at that run's resolution (all runs must share it), each row labelled with the
run's preset, method and checkpoint step (`--step`: every run's checkpoint of that step, so that runs which
trained for different lengths are shown at equal training; default: each run's newest). This is the figure
the paper makes for its comparisons (Fig. 1, Fig. 3: the same images through each method), so that
"sharper than" is something one looks at, not only a number.

Also every other figure: the training grids (`write_grid`) and one evaluated run's reconstructions,
re-encoding (Fig. 5), interpolation (Fig. 7) and nearest neighbours (`write_figures`, for repro.evaluate).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from repro import provenance as prov
from repro.assets import display_path
from repro.checkpoint import CheckpointError
from repro.data import DataError
from repro.runs import load_run
from repro.scores import Reference, load_eval_images, method_of

if TYPE_CHECKING:
    from PIL import Image

# Figures are WebP: a sheet of 96 px reconstructions at quality 85 is 60–70 % of the JPEG at quality 90 that figures
# were before, and keeps the generators' fine textures and checkerboards better (grey pixel noise: mean error ~0.014
# against the JPEG's ~0.015; JPEG at 85 visibly smoothed them); method 6 (the smallest) takes ~0.2 s for the largest
# sheet. A `.jpg` path still writes JPEG at JPEG_QUALITY, a `.png` path lossless PNG.
FIGURE_SUFFIX = ".webp"
WEBP_QUALITY = 85
WEBP_METHOD = 6
JPEG_QUALITY = 90
FIGURE_SUFFIXES = (".webp", ".jpg", ".png")  # what runs have written, newest first: older runs hold JPEG or PNG


def save_figure(figure: "Image.Image", path: Path) -> None:
    """Write a figure in the format its suffix names (`.webp` at WEBP_QUALITY, `.jpg`/`.jpeg` at JPEG_QUALITY,
    `.png` lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".webp":
        figure.convert("RGB").save(path, quality=WEBP_QUALITY, method=WEBP_METHOD)
    elif suffix in (".jpg", ".jpeg"):
        figure.convert("RGB").save(path, quality=JPEG_QUALITY)
    else:
        figure.save(path)


def existing_figure(path: Path) -> Path | None:
    """The figure `path` names whatever its suffix (`grid-latest`, `eval/reconstructions.webp`) as a run holds it:
    the first of FIGURE_SUFFIXES that exists, so that runs written before WebP are read too; None if none does."""
    for suffix in FIGURE_SUFFIXES:
        if path.with_suffix(suffix).exists():
            return path.with_suffix(suffix)
    return None


def save_images(images: torch.Tensor, path: Path, columns: int) -> None:
    """(N, 3, H, W) RGB [0, 1] as one sheet, `columns` a row, 2 px white padding (torchvision's save_image,
    written through save_figure)."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.clamp(0, 1), nrow=columns, padding=2, pad_value=1.0)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    save_figure(Image.fromarray(pixels), path)


def write_grid(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor, columns: int = 4) -> None:
    """Pairs (target | reconstruction) side by side, `columns` pairs per row."""
    pairs = torch.stack([targets, reconstructions.clamp(0, 1)], 1).flatten(0, 1)
    save_images(pairs, path, 2 * columns)


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
    return prov.record(prov.command("repro.figures", argv),
                       images=f"the first {n} of the first run's eval_data (sorted paths)", rows=runs)


# ---- the figures of one evaluated run (repro.evaluate) ----------------------------------------------
REENCODE_ITERATIONS = 8      # Fig. 5 shows 8 iterations of image → features → reconstruction
INTERPOLATION_STEPS = 8      # Fig. 7: codes (1 − t)·y_a + t·y_b for 8 values of t in [0, 1]
NEIGHBOURS = 5               # nearest neighbours shown per query
FIGURE_CAPTIONS = {
    "reconstructions": "pairs (original | reconstruction).",
    "reencoding": "Fig. 5: row 0 the originals, row t the reconstruction after t rounds of image → features → "
                  "reconstruction.",
    "interpolation": "Fig. 7: per row, image A, the decoded codes (1 − t)·E(A) + t·E(B) for t from 0 to 1, "
                     "image B.",
    "neighbours": "per query two rows, image space then feature space: original, reconstruction, then the "
                  "evaluation images nearest to the reconstruction (green frame: the query's own original).",
    "mv_reconstructions": "pairs (original | Mahendran & Vedaldi reconstruction from the same features).",
}



def save_grid(path: Path, images: torch.Tensor, columns: int) -> str:
    save_images(images, path, columns)
    return path.name


def reencode(model: Any, images: torch.Tensor, iterations: int) -> torch.Tensor:
    """Fig. 5: image → features → reconstruction → features → …

    Returns (iterations + 1, B, 3, H, W); row 0 is the input, row t the reconstruction after t rounds.
    """
    rows = [images]
    with torch.no_grad():
        for _ in range(iterations):
            rows.append(model.decode(model.encode(rows[-1])).clamp(0, 1))
    return torch.stack(rows)


def interpolate(model: Any, image_a: torch.Tensor, image_b: torch.Tensor, steps: int) -> torch.Tensor:
    """Fig. 7: decode (1 − t)·E(a) + t·E(b) for `steps` values of t ∈ [0, 1]; (steps, 3, H, W)."""
    with torch.no_grad():
        codes = model.encode(torch.stack([image_a, image_b]))
        t = torch.linspace(0, 1, steps, device=codes.device).view(-1, *([1] * (codes.dim() - 1)))
        return model.decode((1 - t) * codes[0:1] + t * codes[1:2]).clamp(0, 1)


def frame(image: torch.Tensor, colour: tuple[float, float, float] = (0.0, 0.8, 0.0), width: int = 2) -> torch.Tensor:
    """A copy of a (3, H, W) image with a coloured border (marks the true original among neighbours)."""
    framed = image.clone()
    c = torch.tensor(colour).view(3, 1, 1)
    framed[:, :width], framed[:, -width:], framed[:, :, :width], framed[:, :, -width:] = c, c, c, c
    return framed


def neighbour_rows(query: int, reconstructions: torch.Tensor, features: torch.Tensor, ref: Reference,
                   k: int) -> torch.Tensor:
    """Two rows for one query: [original, reconstruction, k nearest originals] in image, then feature space."""
    rows = []
    for queries, candidates in ((reconstructions, ref.images), (features, ref.features)):
        distances = torch.cdist(queries[query : query + 1].flatten(1).double(), candidates.flatten(1).double())[0]
        nearest = distances.argsort()[:k].tolist()
        tiles = [ref.images[query], reconstructions[query]]
        tiles += [frame(ref.images[j]) if j == query else ref.images[j] for j in nearest]
        rows.append(torch.stack(tiles))
    return torch.cat(rows)


def write_figures(out: Path, model: Any, ref: Reference, reconstructions: torch.Tensor, features: torch.Tensor,
                  device: torch.device, columns: int) -> dict[str, str]:
    shown = min(columns, ref.images.shape[0])
    figures = {}
    figures["reconstructions"] = f"reconstructions{FIGURE_SUFFIX}"
    write_grid(out / figures["reconstructions"], ref.images[: 2 * shown], reconstructions[: 2 * shown], columns=4)
    sequence = reencode(model, ref.images[:shown].to(device), REENCODE_ITERATIONS).cpu()
    figures["reencoding"] = save_grid(out / f"reencoding{FIGURE_SUFFIX}", sequence.flatten(0, 1), shown)
    pairs = [(i, i + shown // 2) for i in range(min(4, shown // 2))]  # images far apart in the sorted list
    rows = [torch.cat([ref.images[a:a + 1], interpolate(model, ref.images[a].to(device), ref.images[b].to(device),
                                                        INTERPOLATION_STEPS).cpu(), ref.images[b:b + 1]])
            for a, b in pairs]
    if rows:
        figures["interpolation"] = save_grid(out / f"interpolation{FIGURE_SUFFIX}", torch.cat(rows),
                                             INTERPOLATION_STEPS + 2)
    k = min(NEIGHBOURS, ref.images.shape[0])
    grid = torch.cat([neighbour_rows(q, reconstructions, features, ref, k) for q in range(min(4, shown))])
    figures["neighbours"] = save_grid(out / f"neighbours{FIGURE_SUFFIX}", grid, k + 2)
    return figures


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
        print(f"error: --n must be ≥ 1, got {args.n}", file=sys.stderr)
        return 2
    try:
        figure, figure_runs = side_by_side(args.run_dirs, args.n, args.device, args.step)
    except (CheckpointError, FileNotFoundError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_figure(figure, args.out)
    record = provenance(argv, args.n, figure_runs)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(args.run_dirs)} runs × {args.n} images → {args.out} (+ {args.out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
