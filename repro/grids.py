"""Figure files: a sheet of images written as WebP (or JPEG / PNG by its suffix), the training grid of pairs, rows
under labels, and the suffixes runs have written figures in.

Pure writers (images in, a file out) that know nothing of runs or models, so that every stage may use them: the loop
writes its training grids here, `repro.evaluation.figures` its figures, `repro.reporting` reads the suffixes.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

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
