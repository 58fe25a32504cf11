"""The numbers of one model on evaluation images, whatever its kind (inversion, autoencoder, VAE): the
paper's normalised errors in image and feature space, the feature error in a network no run was trained in,
image metrics, gradient error, and whether the model reconstructs *its own* inputs (the chance rule every
claim between two runs rests on). `repro.evaluation.evaluate`, `repro.compare_autoencoders` and Tune's scorer
measure through `reference_of` and `measure`; the metrics themselves live in `repro.evaluation.metrics`."""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from repro.assets import FOLDER_SHA256, REPO_ROOT, sha256_file
from repro.comparators import build_comparator
from repro.config import Config
from repro.data import list_images, load_images, resolve_folder
from repro.errors import DeepsimError
from repro.evaluation import metrics as metric_lib
from repro.evaluation.spectra import band_agreement, spectral_scores
from repro.weights import alexnet_tv_state_dict

# The network of the independent feature error: SqueezeNet v1.0 (real ImageNet weights in the shared assets),
# its last conv block; no preset uses it as comparator (repro.config), so no run was trained to win in it.
INDEPENDENT_NET = ("squeezenet", "fire9/concat")
# A run identifies its own originals "well above chance" when its nearest-own-original rate (the better of
# image and feature space) is at least this many times chance, 1/n for n evaluation images: 3.9 % at n = 256,
# where chance is 0.39 %. A generator that ignores its input sits at chance (results/random-fc6: 0.39 %).
IDENTIFICATION_FACTOR = 10

class EvalError(DeepsimError, ValueError):
    """An argument or run folder that cannot be evaluated; the message says what to do."""


def identification(result: dict[str, Any], n_images: int) -> dict[str, Any]:
    """Does a method reconstruct *its own* inputs? The chance rule of every claim between two runs.

    rate = the better of `nn_own_image_pct` and `nn_own_feature_pct` (how often a reconstruction's nearest
    evaluation image is its own original); chance = 100 / n %; above chance when rate ≥ IDENTIFICATION_FACTOR ×
    chance. A run below it outputs (nearly) one image whatever its input, and its errors measure how far
    that image lies from the data, not what the inverted layer keeps: claims involving it are "not
    measurable at this scale".
    """
    chance = 100.0 / n_images
    rate = max(result["nn_own_image_pct"], result["nn_own_feature_pct"])
    threshold = IDENTIFICATION_FACTOR * chance
    return {"rate_pct": rate, "chance_pct": chance, "threshold_pct": threshold, "above_chance": rate >= threshold}


def method_of(config: Config) -> str:
    """The run's name in tables: deepsim, image-loss (Table 2's 'Our image loss'), or the ablation."""
    if config.model != "inversion":
        return f"{config.model}-{config.recon_loss}"
    terms = {"feat": config.lambda_feat > 0, "adv": config.lambda_adv > 0, "img": config.lambda_img > 0}
    if terms == {"feat": False, "adv": False, "img": True}:
        return "image-loss"
    missing = [name for name, used in terms.items() if not used]
    return "deepsim" + "".join(f"-no-{name}" for name in missing)


def comparator_of(config: Config) -> str | None:
    return f"{config.comparator}:{config.comparator_tap}" if config.lambda_feat > 0 else None


def load_eval_images(config: Config, n: int) -> tuple[torch.Tensor, list[Path], dict[str, Any]]:
    """The first n evaluation images (sorted paths), centre-cropped at the run's resolution, and their sha."""
    folder = resolve_folder(config.eval_data, verify=True)
    files = list_images(folder)[:n]
    if len(files) < 2:
        raise EvalError(f"{folder} holds {len(files)} image(s); the normalised error needs at least 2")
    listing = "".join(f"{sha256_file(f)}  {f.relative_to(folder) if f.is_relative_to(folder) else f.name}\n"
                      for f in files)
    data = {"folder": os.path.relpath(folder, REPO_ROOT), "files": len(files),
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}
    if config.eval_data in FOLDER_SHA256:
        data["folder_sha256"] = FOLDER_SHA256[config.eval_data]
    return load_images(files, config.resolution), files, data


def batched(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int,
            device: torch.device, desc: str, progress: bool) -> torch.Tensor:
    """fn over inputs in batches on `device`, without gradients; results back on the CPU as float32."""
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, inputs.shape[0], batch_size), desc=desc, unit="batch", disable=not progress,
                          leave=False):
            out.append(fn(inputs[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out)


@dataclass
class Reference:
    """The originals, their features, the paper's normalisers N (image space, feature space), the
    originals' total gradient energy (the denominator of every method's sharpness), when measured, the
    originals' features in the independent network (`INDEPENDENT_NET`) with their N, and the up-sampling
    period of the generator under test (`lattice_period`, 2 ** its stride-2 up-convolutions), whose lattice the
    fine-power score leaves out (`repro.evaluation.spectra`); None: no spectral scores."""

    images: torch.Tensor
    features: torch.Tensor
    image_norm: float
    feature_norm: float
    gradient_energy: float
    independent_features: torch.Tensor | None = None
    independent_norm: float | None = None
    lattice_period: int | None = None


def make_reference(images: torch.Tensor, features: torch.Tensor,
                   independent_features: torch.Tensor | None = None, lattice_period: int | None = None
                   ) -> Reference:
    independent_norm = (None if independent_features is None
                        else float(metric_lib.pairwise_mean_distance(independent_features)))
    return Reference(images, features, float(metric_lib.pairwise_mean_distance(images)),
                     float(metric_lib.pairwise_mean_distance(features)),
                     float(metric_lib.gradient_energy(images).sum()), independent_features, independent_norm,
                     lattice_period)


def lattice_period_of(model: Any) -> int | None:
    """The up-sampling period of a model's generator (2 ** its stride-2 up-convolutions) where it divides the
    output side at least 4 times, so that its lattice lies on whole frequencies and leaves most of them free;
    else None (no spectral scores)."""
    generator = getattr(model, "generator", None)
    n_up, side = getattr(generator, "n_up", None), getattr(generator, "resolution", None)
    if n_up is None or side is None or side % 2**n_up or side // 2**n_up < 4:
        return None
    return 2**n_up


def nearest_is_own(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(n,) bool: is query i's nearest candidate (Euclidean) candidate i?"""
    distances = torch.cdist(queries.flatten(1).double(), candidates.flatten(1).double())
    return distances.argmin(1) == torch.arange(queries.shape[0])


def score(ref: Reference, reconstructions: torch.Tensor, features: torch.Tensor,
          image_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
          independent_features: torch.Tensor | None = None) -> dict[str, Any]:
    """Every number of one method: the paper's errors (%), the feature error in the independent network (%,
    None when not measured), image metrics, gradient error (%), the fine-scale power kept off G's lattice (%)
    and the lattice's excess (where `ref.lattice_period` is known), nearest-neighbour retrieval (%) and whether
    that is above chance."""
    independent = None
    if independent_features is not None and ref.independent_features is not None:
        independent = 100 * float(metric_lib.normalised_error(independent_features, ref.independent_features,
                                                              ref.independent_norm))
    result: dict[str, Any] = {
        "image_error_pct": 100 * float(metric_lib.normalised_error(reconstructions, ref.images, ref.image_norm)),
        "feature_error_pct": 100 * float(metric_lib.normalised_error(features, ref.features, ref.feature_norm)),
        "independent_feature_error_pct": independent,
    }
    result.update(image_metrics(reconstructions, ref.images))
    result["gradient_error_pct"] = 100 * float(metric_lib.gradient_error(reconstructions, ref.images).mean())
    result["sharpness_pct"] = 100 * float(metric_lib.gradient_energy(reconstructions).sum()) / ref.gradient_energy
    if ref.lattice_period is not None:
        spectral = spectral_scores(reconstructions, ref.images, ref.lattice_period)
        result["fine_power_pct"] = 100 * spectral["off_lattice_power_ratio"]
        result["lattice_excess"] = spectral["lattice_excess"]
        result["lattice_period"] = ref.lattice_period
        # per octave: power kept and how much of it is the originals' structure in place (descriptive)
        result["bands"] = {name: {key: round(value, 4) for key, value in numbers.items()}
                           for name, numbers in band_agreement(reconstructions, ref.images, ref.lattice_period).items()}
    result["nn_own_image_pct"] = 100 * float(nearest_is_own(reconstructions, ref.images).double().mean())
    result["nn_own_feature_pct"] = 100 * float(nearest_is_own(features, ref.features).double().mean())
    result["identification"] = identification(result, ref.images.shape[0])
    return result


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (a VAE decodes μ, no dropout), back in the mode it came in afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def reference_of(model: Any, images: torch.Tensor, batch_size: int, progress: bool = False,
                 independent: Any | None = None, encode: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> Reference:
    """The reference `measure` scores a model against: `images` (n, 3, H, W) in [0, 1] on the CPU, their features
    (`encode`, default `model.encode`), and, when `independent` is given, their features in that network."""
    device = next(model.parameters()).device
    encode = model.encode if encode is None else encode
    with eval_mode(model):
        features = batched(encode, images, batch_size, device, "encode", progress)
    originals_independent = (None if independent is None else
                             batched(independent, images, batch_size, device, "independent net", progress))
    return make_reference(images, features, originals_independent, lattice_period_of(model))


def measure(model: Any, ref: Reference, image_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
            batch_size: int, progress: bool = False, independent: Any | None = None,
            encode: Callable[[torch.Tensor], torch.Tensor] | None = None, name: str = ""
            ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Every number of one model on the reference's images, whatever its kind: an inversion, an autoencoder or a
    VAE (any model with `encode`, whose forward returns the reconstruction first; measured in eval mode, so a
    VAE decodes μ, and left in the mode it came in).

    Reconstructions are clamped to [0, 1] (the image the model shows), re-encoded by `encode` (default
    `model.encode`: the feature space `ref.features` must come from, see `reference_of`) and, when given, by the
    `independent` network of `ref.independent_features`, then scored (`score`).

    Returns:
        (scores, reconstructions (n, 3, H, W), their features), both tensors on the CPU.
    """
    device = next(model.parameters()).device
    encode = model.encode if encode is None else encode
    label = f" {name}" if name else ""
    with eval_mode(model):
        reconstructions = batched(lambda x: model(x)[0].clamp(0, 1), ref.images, batch_size, device,
                                  "reconstruct" + label, progress)
        features = batched(encode, reconstructions, batch_size, device, "re-encode" + label, progress)
    independent_features = (None if independent is None else batched(
        independent, reconstructions, batch_size, device, "independent net" + label, progress))
    return score(ref, reconstructions, features, image_metrics, independent_features), reconstructions, features


def independent_network(config: Config, resolution: int) -> tuple[Any | None, str]:
    """The network of the independent feature error, or None and why not (when it is the run's own
    comparator or encoder, its space is not independent of what the run was trained or built on)."""
    name, tap = INDEPENDENT_NET
    used = {config.encoder} | ({config.comparator} if config.lambda_feat > 0 else set())
    if name in used:
        return None, f"{name} is this run's encoder or comparator"
    return build_comparator(name, tap, resolution).eval(), f"{name}:{tap}"


def image_metric_fn(device: torch.device, batch_size: int, progress: bool
                    ) -> Callable[[torch.Tensor, torch.Tensor], dict[str, float]]:
    """PSNR, SSIM, MS-SSIM and LPIPS (AlexNet backbone from repro.weights), averaged over the images."""
    lpips = metric_lib.LPIPSMetric(alexnet_tv_state_dict()).to(device).eval()

    def measure(reconstructions: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
        sums: dict[str, float] = {}
        with torch.no_grad():
            for start in tqdm(range(0, originals.shape[0], batch_size), desc="metrics", unit="batch",
                              disable=not progress, leave=False):
                a = reconstructions[start : start + batch_size].to(device)
                b = originals[start : start + batch_size].to(device)
                values = metric_lib.compute_metrics(a, b, lpips=lpips)
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + float(value.sum())
        return {name: total / originals.shape[0] for name, total in sums.items()}

    return measure
