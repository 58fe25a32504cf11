"""The figures of runs: the same images through several runs side by side (`python -m repro.figures`), and one
evaluated run's reconstructions, iterative re-encoding (Fig. 5), interpolation (Fig. 7), nearest neighbours
(`write_figures`, for `python -m repro.evaluate`) and a VAE's samples (Fig. 8, `sample_images`).

`side_by_side`: one row of originals, then one row per run: its reconstructions of the first `n` evaluation images
of the first run's `eval_data`, at that run's resolution (all runs must share it), each row labelled with the run's
preset, method and checkpoint step (`step`: every run's checkpoint of that step, so that runs which trained for
different lengths are shown at equal training; default: each run's newest). This is the figure the paper makes for
its comparisons (Fig. 1, Fig. 3: the same images through each method), so that "sharper than" is something one
looks at, not only a number.

The files themselves (WebP sheets, the pairs grid, labelled rows) are written by `repro.grids`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from repro import provenance as prov
from repro.assets import display_path
from repro.autoencoders import VAE
from repro.evaluation.scores import Reference, load_eval_images, method_of
from repro.grids import FIGURE_SUFFIX, labelled_rows, save_images, write_grid
from repro.runs import load_run

if TYPE_CHECKING:
    from PIL import Image


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


# ---- a VAE's samples (Fig. 8; python -m repro.sample, repro.compare_autoencoders, repro.evaluation.collapse) ----
def sample_images(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """n decoded samples (n, 3, R, R) RGB clamped to [0, 1], on the CPU; same seed → same images."""
    if n < 1:
        raise ValueError(f"number of samples must be ≥ 1, got {n}")
    model.eval()
    images = model.sample(n, torch.Generator().manual_seed(seed))
    return images.float().clamp(0, 1).cpu()


def write_samples(path: Path, images: torch.Tensor, columns: int | None = None) -> None:
    """A square-ish grid of images (N, 3, R, R) RGB [0, 1] in the format `path`'s suffix names."""
    save_images(images, path, columns or math.ceil(math.sqrt(images.shape[0])))
