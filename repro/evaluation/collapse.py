"""Has a VAE (or autoencoder) collapsed to one image? (`python -m repro.collapse`)

Posterior collapse shows as a decoder that ignores its code: μ decodes to (nearly) the same image whatever the
input, and samples z ~ N(0, I) all look alike. Issue 16 asks whether the DeePSiM VAE still does that once λ_KL
follows the reduced-scale rule, so we measure it, per model, on the held-out evaluation images:
- `nn_own_image_pct`: how often a reconstruction's nearest evaluation image (pixel L2) is its own original;
  chance is 100/n; a model that ignores its input stays at chance (the inversions' chance rule, same factor);
- `recon_spread`, `sample_spread`: mean pairwise distance among the reconstructions (among the samples) over
  that among the originals: ≈ 0 when every output is one image, ≈ 1 for outputs as varied as real images.
A model counts as collapsed when its reconstructions identify their originals below IDENTIFICATION_FACTOR ×
chance, or its reconstructions or samples spread less than MIN_SPREAD of the originals'. Our measure: the
papers state none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repro.errors import UsageError
from repro.evaluation.figures import sample_images
from repro.evaluation.metrics import pairwise_mean_distance
from repro.evaluation.scores import IDENTIFICATION_FACTOR, load_eval_images, nearest_is_own
from repro.runs import load_run

MIN_SPREAD = 0.25  # below a quarter of the originals' own spread, the outputs are variations of one image


def collapse_record(reconstructions: torch.Tensor, originals: torch.Tensor,
                    samples: torch.Tensor | None = None) -> dict[str, Any]:
    """The numbers above for one model. reconstructions, originals: (n, 3, R, R) in [0, 1], row i of one the
    reconstruction of row i of the other; samples: (m, 3, R, R) decoded z ~ N(0, I), or None (autoencoder)."""
    if reconstructions.shape != originals.shape:
        raise ValueError(f"reconstructions {tuple(reconstructions.shape)} and originals {tuple(originals.shape)} "
                         "must have the same shape")
    n = originals.shape[0]
    norm = pairwise_mean_distance(originals)
    own = 100 * float(nearest_is_own(reconstructions, originals).double().mean())
    record: dict[str, Any] = {
        "n_images": n, "chance_pct": 100 / n, "nn_own_image_pct": own,
        "recon_spread": pairwise_mean_distance(reconstructions) / norm,
        "sample_spread": None if samples is None else pairwise_mean_distance(samples) / norm,
    }
    reasons = []
    if own < IDENTIFICATION_FACTOR * 100 / n:
        reasons.append(f"reconstructions find their own original for {own:.2f} % of {n} images, below "
                       f"{IDENTIFICATION_FACTOR} × chance ({IDENTIFICATION_FACTOR * 100 / n:.1f} %)")
    for key in ("recon_spread", "sample_spread"):
        if record[key] is not None and record[key] < MIN_SPREAD:
            reasons.append(f"{key} {record[key]:.3f} < {MIN_SPREAD}")
    record["collapsed"] = bool(reasons)
    record["why"] = "; ".join(reasons) or None
    return record


def measure_run(run_dir: Path, n_images: int, n_samples: int, device: str | None = None,
                step: int | None = None) -> dict[str, Any]:
    """Load an autoencoder/VAE run (newest intact checkpoint, or the one of `step`: collapse over training)
    and measure it on the first `n_images` evaluation images of its config; μ is decoded (eval mode)."""
    run = load_run(run_dir, device, step)
    model = run.parts.model
    if run.config.model == "inversion":
        raise UsageError(f"{run_dir} is an inversion run: collapse is measured on autoencoders and VAEs")
    images, _, _ = load_eval_images(run.config, n_images)
    model.eval()
    device_ = next(model.parameters()).device
    with torch.no_grad():
        reconstructions = torch.cat([model(batch.to(device_))[0].float().clamp(0, 1).cpu()
                                     for batch in images.split(32)])
    samples = sample_images(model, n_samples, seed=0) if run.config.model == "vae" else None
    return {"run": str(run_dir), "model": run.config.model, "recon_loss": run.config.recon_loss,
            "lambda_kl": run.config.lambda_kl if run.config.model == "vae" else None, "step": run.step,
            **collapse_record(reconstructions, images, samples)}
