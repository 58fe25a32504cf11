"""Do reconstructions keep green? (`python -m repro.colour_check`)

Issue 28 found that no generator of the 2×2-code protocol reconstructed a green original green (the green excess
G − max(R, B) of green originals, +21 of 255, came back as −6), although Mahendran & Vedaldi's optimisation
recovers green from the very same code. This measures, per run, on the evaluation images:
- the per-image channel means of reconstructions against the originals' (Pearson r over images, per channel);
- for the *green originals* (mean green excess above `GREEN` of the range): their mean green excess, the
  reconstructions' mean green excess, and how many of them come back green (excess above `GREEN / 2`);
and, once, the share of green pixels (excess above `GREEN`) in the training and the evaluation data, since a
prior learnt from data with little green pulls uncertain colours to grey-brown.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repro.data import list_images, load_images, resolve_folder
from repro.runs import load_run

GREEN = 0.04  # of the [0, 1] range (≈ 10 of 255): a visibly green pixel / image


def green_excess(images: torch.Tensor) -> torch.Tensor:
    """G − max(R, B) per pixel, (N, H, W), for RGB images in [0, 1]."""
    return images[:, 1] - torch.maximum(images[:, 0], images[:, 2])


def colour_scores(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, Any]:
    """Channel-mean agreement and the green originals' excess, originals vs reconstructions (both (N, 3, H, W))."""
    means_o, means_r = originals.mean((2, 3)), reconstructions.mean((2, 3))
    r = [float(torch.corrcoef(torch.stack([means_o[:, c], means_r[:, c]]))[0, 1]) for c in range(3)]
    excess_o, excess_r = green_excess(originals).mean((1, 2)), green_excess(reconstructions).mean((1, 2))
    green = excess_o > GREEN
    return {"channel_mean_r": dict(zip("RGB", r)), "green_originals": int(green.sum()),
            "green_excess_originals_255": 255 * float(excess_o[green].mean()) if green.any() else None,
            "green_excess_reconstructions_255": 255 * float(excess_r[green].mean()) if green.any() else None,
            "green_reconstructed_green": int((excess_r[green] > GREEN / 2).sum())}


def green_pixel_share(images: torch.Tensor) -> float:
    return float((green_excess(images) > GREEN).float().mean())


def data_shares(config: Any, n: int) -> dict[str, float]:
    """Share of green pixels in `n` training images (spread over the listing) and in the evaluation images."""
    train = list_images(resolve_folder(config.train_data, False))
    picks = [train[i * len(train) // n] for i in range(min(n, len(train)))]
    evaluation = list_images(resolve_folder(config.eval_data, False))[:n]
    return {"train": green_pixel_share(load_images(picks, config.resolution)),
            "eval": green_pixel_share(load_images(evaluation, config.resolution))}


def check(run_dirs: list[Path], step: int | None, n: int) -> dict[str, Any]:
    runs, shares = [], None
    for folder in run_dirs:
        run = load_run(folder, "cpu", step)
        originals = load_images(list_images(resolve_folder(run.config.eval_data, False))[:n], run.config.resolution)
        with torch.no_grad():
            recon = torch.cat([run.parts.model(originals[i:i + 32])[0].float().clamp(0, 1)
                               for i in range(0, n, 32)])
        runs.append({"run": str(folder), "preset": run.config.preset, "step": run.step,
                     **colour_scores(originals, recon)})
        shares = shares or {"green_pixel_share": data_shares(run.config, n), "train_data": run.config.train_data,
                            "eval_data": run.config.eval_data}
    return {"runs": runs, **(shares or {}), "n_images": n, "green_threshold_255": 255 * GREEN}
