"""`python -m repro.compare_autoencoders [--steps N] [--resolution 64] [--out results/autoencoders/<id>] [--vae]`

The loss comparison of DeePSiM's autoencoder experiment (arXiv v1) with Ridgeway/Snell's MS-SSIM as a
baseline: four autoencoders of one architecture (`repro.autoencoders`: conv encoder → `latent_dim` code →
fc6-style generator), trained through the one loop (`repro.loop.train`) with recon_loss se, l1, ms-ssim and
deepsim, then measured on held-out images (`imagenet-1k-256`, never seen in training on `caltech101`).

`--vae` also trains the pair of Fig. 8: a VAE with the squared-Euclidean loss and the DeePSiM VAE (paper
§4.2), and writes a grid of samples z ~ N(0, I) for each.

Writes into OUT:
- `reconstructions.webp`: rows = originals, then one row per model (labelled), columns = held-out images;
- `metrics.json` + `metrics.md`: PSNR, SSIM, MS-SSIM, LPIPS and the paper's normalised image-space error
  ‖a − b‖₂ / N (N = mean distance between all pairs of different evaluation images), with provenance;
  measured by `repro.evaluation.scores.measure`, the one measurement of every model kind, so metrics.json also holds
  its other numbers (feature error in the model's own code, gradient error, sharpness, nearest neighbours);
- `samples-vae-se.webp`, `samples-vae-deepsim.webp` (with `--vae`);
and keeps each model's run folder (config.json, stats.jsonl, grids, final checkpoint: large, so outside the
results) in `--runs-dir` (default runs/autoencoders/<id>), so `python -m repro.sample RUNS/vae-deepsim`
works afterwards.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from repro import provenance
from repro.assets import display_path
from repro.config import Config, ConfigError, make_config, parse_overrides
from repro.devices import pick_device
from repro.errors import cli
from repro.evaluation import metrics as metric_lib
from repro.evaluation.figures import sample_images, write_samples
from repro.evaluation.metrics import AUTOENCODER_METRICS
from repro.evaluation.scores import image_metric_fn, load_eval_images, measure, reference_of
from repro.evaluation.tables import markdown_table, metric_cells, metric_headings
from repro.grids import FIGURE_SUFFIX, labelled_rows, save_figure
from repro.loop import Session, train
from repro.provenance import git_commit
from repro.runs import load_run

# The models compared: presets of repro.config (the VAE and autoencoders are presets of the one loop).
AE_MODELS = {"se": "ae-se", "l1": "ae-l1", "ms-ssim": "ae-ms-ssim", "deepsim": "ae-deepsim"}
VAE_MODELS = {"vae-se": "vae-se", "vae-deepsim": "vae"}
# `--conv5star`: the DeePSiM models' comparator sees a 227 px copy of each image, so its pool5 is a 6×6 map
# (protocol CONV5*; at 64 px pool5 is 1×1). The baselines have no comparator and stay as they are.
CONV5STAR = {"ae-deepsim": "ae-deepsim-conv5star", "vae": "vae-conv5star"}
MEASURE_BATCH = 32  # images per forward pass when measuring


@dataclass(frozen=True)
class Options:
    out: Path                      # results folder (grids, metrics)
    runs_dir: Path                 # the models' run folders (checkpoints)
    steps: int                     # generator iterations per model
    resolution: int                # side of the images
    losses: tuple[str, ...]        # autoencoder recon losses to compare (subset of AE_MODELS)
    vae: bool                      # also train and sample the SE-VAE and the DeePSiM VAE
    conv5star: bool                # the DeePSiM models' comparator at 227 px (CONV5STAR)
    n_eval: int                    # held-out images measured
    grid_images: int               # columns of the reconstruction grid
    n_samples: int                 # VAE samples per grid
    overrides: dict[str, str]      # --set KEY=VALUE for every model (batch_size, latent_dim, device, …)
    progress: bool
    command: str


def model_presets(options: Options) -> dict[str, str]:
    """Model name → preset of every model this comparison trains."""
    names = {f"ae-{loss}": AE_MODELS[loss] for loss in options.losses}
    if options.vae:
        names.update(VAE_MODELS)
    return {name: CONV5STAR.get(preset, preset) if options.conv5star else preset for name, preset in names.items()}


def model_config(preset: str, options: Options) -> Config:
    """The preset (or its fallback) with this comparison's steps, resolution and --set overrides."""
    scheduled = {"steps": options.steps, "resolution": options.resolution,
                 "image_every": max(1, options.steps // 4), "checkpoint_every": options.steps}
    return make_config(preset, {**scheduled, **options.overrides})


def device_override(options: Options) -> str | None:
    """--set device=cpu|cuda, or None for the configs' own rule."""
    device = options.overrides.get("device")
    return None if device in (None, "auto") else device


def train_model(name: str, config: Config, options: Options) -> dict[str, Any]:
    """Train one model through the one loop in OUT/runs/<name>; returns its summary and wall time."""
    run_dir = options.runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    print(f"training {name} ({config.model}, recon {config.recon_loss}, {config.steps} steps) in {run_dir}",
          flush=True)
    started = time.time()
    summary = train(config, run_dir, Session(show_progress=options.progress))
    provenance.write(run_dir, provenance.record(options.command, run_config=config, dev=pick_device(config),
                                                started=started, config=config.to_dict(), status="finished",
                                                launcher="local", num_workers=1, result=summary))
    return {"summary": summary, "wall_time_s": round(time.time() - started, 1), "run_dir": run_dir}


def measure_trained(name: str, trained: dict[str, Any], images: torch.Tensor,
                    image_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
                    options: Options) -> tuple[dict[str, Any], torch.Tensor]:
    """A trained model (its newest checkpoint) scored on the held-out images by `repro.evaluation.scores.measure`, the
    feature space being the model's own code (a VAE's μ); returns its record and reconstructions."""
    run = load_run(trained["run_dir"], device_override(options))
    model = run.parts.model
    reference = reference_of(model, images, MEASURE_BATCH, options.progress)
    result, reconstructions, _ = measure(model, reference, image_metrics, MEASURE_BATCH, options.progress, name=name)
    config = run.config
    result.update({"model": config.model, "recon_loss": config.recon_loss, "steps": run.step,
                   "wall_time_s": trained["wall_time_s"], "run": display_path(trained["run_dir"]),
                   "final_train_losses": {k: v for k, v in trained["summary"]["last"].items()
                                          if k in ("total", "recon", "feat", "adv", "img", "kl", "discr")}})
    if config.model == "vae":
        samples = sample_images(model, options.n_samples, seed=0)
        path = options.out / f"samples-{name}{FIGURE_SUFFIX}"
        write_samples(path, samples)
        result["samples"] = path.name
    return result, reconstructions


def settings(configs: dict[str, dict[str, Any]]) -> str:
    """One sentence with the settings every model shares and those that differ."""
    first = next(iter(configs.values()))
    shared = (f"Shared: lr {first['lr']}, batch {first['batch_size']}, latent_dim {first['latent_dim']}, "
              f"generator width {first['generator_width']}, seed {first['seed']}.")
    # the DeePSiM terms as the DeePSiM models have them (the baselines carry the preset's unused λ)
    ds = next((c for c in configs.values() if c["recon_loss"] == "deepsim"), None)
    seen_at = ds.get("comparator_resolution") if ds else None  # 0: the comparator sees the images' own side
    seen = f" at {seen_at} px" if seen_at and seen_at != ds["resolution"] else ""
    deepsim = (f" DeePSiM loss: λ_feat {ds['lambda_feat']} ({ds['comparator']} {ds['comparator_tap']}{seen}), "
               f"λ_adv {ds['lambda_adv']} (discriminator width {ds['discriminator_width']}), "
               f"λ_img {ds['lambda_img']}." if ds else "")
    kl = [f"{name} λ_KL {c['lambda_kl']}" for name, c in configs.items() if c["model"] == "vae"]
    return shared + deepsim + (f" {', '.join(kl)}." if kl else "")


def markdown(record: dict[str, Any]) -> str:
    prov = record["provenance"]
    lines = ["# Autoencoder loss comparison", "",
             f"{prov['resolution']} px, {prov['steps']} steps per model, trained on `{prov['data']['train']}`, "
             f"measured on the first {prov['n_eval']} images of `{prov['data']['eval']['folder']}` (held out). "
             f"Device: {prov['device']}. Commit `{prov['commit']}`.", "", settings(record["configs"]), "",
             *markdown_table(["model", *metric_headings(AUTOENCODER_METRICS, arrow=True), "wall (s)"],
                             ([name, *metric_cells(result, AUTOENCODER_METRICS), f"{result['wall_time_s']:.0f}"]
                              for name, result in record["results"].items()))]
    lines += ["", "Image error: ‖a − b‖₂ / N in %, N = mean Euclidean distance between all pairs of different "
              "evaluation images (the paper's normalisation; 100 % = a random evaluation image). VAE rows decode "
              "μ (no sampling). Reconstructions are clamped to [0, 1] before measuring.", "",
              f"Command: `{prov['command']}`", "", f"![reconstructions](reconstructions{FIGURE_SUFFIX})", ""]
    lines += [f"![samples of {name}]({r['samples']})" for name, r in record["results"].items() if "samples" in r]
    return "\n".join(lines) + "\n"


def compare(options: Options) -> dict[str, Any]:
    """Train every model, then write the grid and the metrics table; returns the metrics record."""
    started = time.time()
    threads = options.overrides.get("threads")
    if threads is not None and int(threads) > 0:
        torch.set_num_threads(int(threads))
    configs = {name: model_config(preset, options) for name, preset in model_presets(options).items()}
    options.out.mkdir(parents=True, exist_ok=True)
    trained = {name: train_model(name, config, options) for name, config in configs.items()}

    first = next(iter(configs.values()))
    images, _, eval_data = load_eval_images(first, options.n_eval)
    image_norm = float(metric_lib.pairwise_mean_distance(images))
    results, rows = {}, [("original", images[: options.grid_images])]
    device = torch.device(device_override(options) or pick_device(first))
    image_metrics = image_metric_fn(device, MEASURE_BATCH, options.progress)  # PSNR, SSIM, MS-SSIM, LPIPS
    for name in configs:
        results[name], reconstructions = measure_trained(name, trained[name], images, image_metrics, options)
        rows.append((name, reconstructions[: options.grid_images]))
    save_figure(labelled_rows(rows), options.out / f"reconstructions{FIGURE_SUFFIX}")

    record = {
        "results": results,
        "normaliser_image": image_norm,
        "configs": {name: config.to_dict() for name, config in configs.items()},
        "provenance": provenance.record(options.command, run_config=first, dev=device, started=started,
                                        data={"train": provenance.data(first)["train"], "eval": eval_data},
                                        steps=options.steps, resolution=options.resolution, n_eval=images.shape[0]),
    }
    (options.out / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (options.out / "metrics.md").write_text(markdown(record))
    return record


def parse_args(argv: list[str]) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m repro.compare_autoencoders", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="generator iterations per model (default 500)")
    parser.add_argument("--resolution", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--out", type=Path, help="results folder (default results/autoencoders/<UTC timestamp>)")
    parser.add_argument("--runs-dir", type=Path, help="run folders of the models (default runs/autoencoders/<id>)")
    parser.add_argument("--losses", default="se,l1,ms-ssim,deepsim",
                        help="autoencoder losses to compare, comma-separated, or 'none' (default: all four)")
    parser.add_argument("--vae", action="store_true", help="also train the SE-VAE and the DeePSiM VAE (Fig. 8)")
    parser.add_argument("--conv5star", action="store_true",
                        help="the DeePSiM models' comparator sees 227 px copies: a 6×6 pool5 map (protocol CONV5*)")
    parser.add_argument("--n-eval", type=int, default=64, help="held-out images measured (default 64)")
    parser.add_argument("--grid-images", type=int, default=8, help="columns of the reconstruction grid")
    parser.add_argument("--samples", type=int, default=64, help="samples per VAE grid (default 64)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model, e.g. --set batch_size=16 --set latent_dim=128")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved configs and exit")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    losses = () if args.losses.strip() == "none" else tuple(s.strip() for s in args.losses.split(",") if s.strip())
    unknown = [loss for loss in losses if loss not in AE_MODELS]
    if unknown:
        raise ConfigError(f"unknown autoencoder loss {', '.join(unknown)}; choose from {', '.join(AE_MODELS)}")
    if not losses and not args.vae:
        raise ConfigError("nothing to train: give --losses or --vae")
    for flag, value, least in (("--steps", args.steps, 1), ("--n-eval", args.n_eval, 2),
                               ("--grid-images", args.grid_images, 1), ("--samples", args.samples, 1)):
        if value < least:
            raise ConfigError(f"{flag} must be ≥ {least}, got {value}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("results") / "autoencoders" / stamp
    options = Options(out=out, runs_dir=args.runs_dir or Path("runs") / "autoencoders" / out.name, steps=args.steps,
                      resolution=args.resolution, losses=losses, vae=args.vae, conv5star=args.conv5star,
                      n_eval=args.n_eval,
                      grid_images=args.grid_images, n_samples=args.samples,
                      overrides=parse_overrides(args.overrides), progress=not args.no_progress,
                      command="python -m repro.compare_autoencoders " + " ".join(shlex.quote(a) for a in argv))
    return options, args.dry_run


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    git_commit()  # pin the commit of the code now running
    options, dry_run = parse_args(argv)
    configs = {name: model_config(preset, options)  # ConfigError: one line, exit 2 (`cli`)
               for name, preset in model_presets(options).items()}
    if dry_run:
        print(json.dumps({name: config.to_dict() for name, config in configs.items()}, indent=2))
        return 0
    record = compare(options)
    print(f"wrote {options.out / 'metrics.md'} and {options.out / f'reconstructions{FIGURE_SUFFIX}'} "
          f"({record['provenance']['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
