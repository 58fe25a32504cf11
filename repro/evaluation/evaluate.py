"""One run measured (`evaluate`, behind `python -m repro.evaluate`): metrics, figures, tables.

Loads a run folder (config + newest intact checkpoint), reconstructs the first `n` images of the run's
`eval_data` (Caffe-style warp + centre crop at the run's resolution) and measures, as in §4.1 of the paper:

- the normalised Euclidean error ‖a − b‖₂ / N in image space and in feature space (the run's encoder at the
  inverted layer, applied to the reconstruction and to the original), N being the mean distance between all
  pairs of different evaluation images (resp. their features), in % — Table 2's numbers;
- the same feature error in a network that no run uses as comparator (`INDEPENDENT_NET`: SqueezeNet's last
  conv block), so that a feature-space claim is not only checked in the space the full model was trained in;
- PSNR, SSIM, MS-SSIM and LPIPS (AlexNet backbone) from `metrics`; the gradient error
  ‖∇b − ∇a‖ / ‖∇a‖ in % (`metrics.gradient_error`: how far the reconstruction's edges are from the
  original's — 100 % = flat, above = invented structure; the `blur:edges` reading); the fine power kept off G's
  up-sampling lattice and that lattice's excess (`spectra`; the "pixel losses blur" claim reads the fine power);
  and, descriptive only, sharpness: the reconstructions' gradient energy over the originals' (noise counts);
- how often a reconstruction's nearest evaluation image, in image and in feature space, is its own original,
  and whether that is well above chance (`identification`: a comparison between two runs means something
  only when both reconstruct their own inputs, not one image for every input);
- optionally (`mv_steps` > 0), the same for Mahendran & Vedaldi's optimisation (`baselines`) on the same
  images and encoder.

Reconstructions are clamped to [0, 1] before anything is measured or re-encoded: that is the image the
generator shows. It writes `metrics.json` (results + protocol + provenance), `metrics.md` (a table beside the
paper's numbers for the layer), and figures: reconstructions, iterative re-encoding (Fig. 5), interpolation
between features (Fig. 7) and nearest neighbours.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from repro import provenance
from repro.assets import REPO_ROOT, display_path, sha256_file
from repro.checkpoint import CheckpointError
from repro.config import Config, ConfigError
from repro.evaluation import metrics as metric_lib
from repro.evaluation.baselines import config_for_layer, invert_images
from repro.evaluation.figures import FIGURE_CAPTIONS, write_figures
from repro.evaluation.scores import (IDENTIFICATION_FACTOR, EvalError, Reference, batched, comparator_of,
                                     image_metric_fn, independent_network, load_eval_images, measure, method_of,
                                     reference_of, score)
from repro.evaluation.tables import markdown_table, metric_cells, metric_headings
from repro.generator_file import init_generator_path
from repro.grids import FIGURE_SUFFIX, write_grid
from repro.runs import RunFolderError, load_run

PAPER_TABLE = REPO_ROOT / "results" / "paper_table2.json"


@dataclass(frozen=True)
class EvalOptions:
    run_dir: Path                  # a folder written by `python -m repro.train`
    out: Path                      # where metrics and figures go (default RUN_DIR/eval)
    n: int = 256                   # evaluation images (the first n of config.eval_data, sorted by path)
    batch_size: int = 32           # images per forward pass
    mv_steps: int = 0              # > 0: also run Mahendran & Vedaldi for this many steps per batch
    device: str | None = None      # None: the run's own device choice (config.device)
    step: int | None = None        # evaluate the checkpoint of this step (default: the newest intact one)
    figure_images: int = 8         # columns of the reconstruction / re-encoding figures
    progress: bool = True          # tqdm bars
    command: str = ""              # the command line, for provenance


# ---------------------------------------------------------------------------------------------------
# What was measured: method and protocol, as data
# ---------------------------------------------------------------------------------------------------
# The code the paper inverts at each tap of CaffeNet (227 px): what a reduced protocol's code is set beside.
PAPER_CODE = {"pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}


def protocol_name(config: Config) -> str:
    """CONV5* for the reduced protocol that keeps the paper's pool5 code (encoder at 227 px, images at R < 227;
    `repro.config`), "paper" at 227 px, else `<layer>@<R>px` (e.g. the 2×2 code of pool5@96px)."""
    encoder_side = config.encoder_resolution or config.resolution
    if config.resolution == 227 and encoder_side == 227:
        return "paper"
    if config.layer == "pool5" and encoder_side == 227:
        return "CONV5*"
    return f"{config.layer}@{encoder_side}px"


def protocol_of(config: Config, n_images: int, encoder_taps: tuple[str, ...] = (),
                code_shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """What the numbers were measured on, and how that differs from the paper's Table 2; `layer_depth` is
    the inverted tap's position among the encoder's taps (orders layers of any network by depth); `code_shape`
    the inverted code's shape (what the generator takes), set beside the paper's code at that tap; `seed` the
    training seed (`repro.reporting.claims` holds a comparison's margin against the spread between seeds)."""
    differences = []
    if config.encoder != "caffenet" or not config.encoder_weights:
        differences.append(f"encoder {config.encoder!r} instead of CaffeNet with its original weights "
                           "(not obtainable here)")
    paper_code = PAPER_CODE.get(config.layer)
    if code_shape and paper_code and tuple(code_shape) != paper_code:
        values, paper_values = math.prod(code_shape), math.prod(paper_code)
        differences.append(f"code {'×'.join(map(str, code_shape))} = {values:,} values instead of the paper's "
                           f"{'×'.join(map(str, paper_code))} = {paper_values:,} ({100 * values / paper_values:.0f} %)")
    encoder_side = config.encoder_resolution or config.resolution
    if config.resolution != 227:
        seen = f" (the encoder sees them at {encoder_side} px)" if encoder_side != config.resolution else ""
        differences.append(f"images of {config.resolution} px instead of 227 px{seen}")
    differences.append(f"trained on {config.train_data!r}, batch {config.batch_size}, generator width "
                       f"{config.generator_width}, {config.steps:,} steps scheduled (paper: ILSVRC-2012, batch 64, "
                       "width 1, ~1M iterations)")
    differences.append(f"{n_images} images of {config.eval_data!r} instead of the ILSVRC-2012 validation set")
    start = ""
    if config.init_generator:  # a warm-started G is compared only with runs started from the same file
        path = init_generator_path(config.init_generator)
        start = f"{path.name} sha256={sha256_file(path)}"
        differences.append(f"G started from the generator file {path.name}, not from a random initialisation")
    weights = config.encoder_weights
    return {
        "encoder": config.encoder,
        "encoder_weights": f"{weights} sha256={sha256_file(weights)}" if weights else "",
        "layer": config.layer,
        "protocol": protocol_name(config),
        "code_shape": list(code_shape),
        "paper_code_shape": list(paper_code) if paper_code else None,
        "encoder_resolution": encoder_side,
        "layer_depth": encoder_taps.index(config.layer) if config.layer in encoder_taps else None,
        "resolution": config.resolution,
        "eval_data": config.eval_data,
        "n_images": n_images,
        "init_generator": start,
        "seed": config.seed,  # runs of one setting differing only by seed measure the spread claims must exceed
        "paper_protocol": config.encoder == "caffenet" and bool(weights) and config.resolution == 227,
        "differences_from_paper": differences,
    }


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
COLUMNS = tuple(metric_lib.METRICS)  # every registered metric, in the registry's order


def paper_rows(layer: str) -> list[tuple[str, dict[str, Any]]]:
    """Table 2's printed cells for this layer, as (label, {image_error_pct, feature_error_pct})."""
    if not PAPER_TABLE.exists():
        return []
    table = json.loads(PAPER_TABLE.read_text())
    column = next((c for c, tap in table["column_taps"].items() if tap == layer), None)
    rows = []
    for row in table["rows"]:
        cell = row["cells"].get(column) if column else None
        if cell is not None:
            values = {"image_error_pct": cell["image"], "feature_error_pct": cell["feature"]}
            rows.append((f"paper: {row['name']}", values))
    return rows


def markdown(record: dict[str, Any]) -> str:
    rows = [(result["method"], result) for result in record["results"]] + paper_rows(record["layer"])
    lines = [f"# Evaluation of `{record['run']}`", "",
             f"preset `{record['preset']}`, layer `{record['layer']}`, encoder `{record['protocol']['encoder']}`, "
             f"{record['protocol']['resolution']} px, {record['protocol']['n_images']} images of "
             f"`{record['protocol']['eval_data']}`, checkpoint step {record['provenance']['step']}.", "",
             *markdown_table(["method", *metric_headings(COLUMNS)],
                             ([label, *metric_cells(values, COLUMNS)] for label, values in rows))]
    lines += ["", "Errors: ‖a − b‖₂ / N in %, N = mean distance between all pairs of different evaluation images "
              "(feature space: the encoder at the inverted layer; indep.: " + record.get("independent_net", "–") +
              ", which no run uses as comparator); 100 % = a random evaluation image. Gradient error: "
              "‖∇b − ∇a‖ / ‖∇a‖ (0 = the original's edges, 100 % = a flat image, above = invented structure). "
              "Sharpness: gradient energy of the reconstructions over the originals' (noise counts too). "
              f"NN = own: chance is {100 / record['protocol']['n_images']:.2f} %; a run below "
              f"{IDENTIFICATION_FACTOR} × chance is not compared with others. "
              "Paper rows: Table 2 (CaffeNet, 227 px, ILSVRC-2012 val), not the same protocol when these differ: "
              + "; ".join(record["protocol"]["differences_from_paper"]) + ".", ""]
    for name, path in record["figures"].items():
        lines += [f"**{name}**: {FIGURE_CAPTIONS.get(name, '')}", "", f"![{name}]({path})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------
def open_run(options: EvalOptions) -> Any:
    """The run (config + model from its newest intact checkpoint), or an EvalError saying what to do."""
    try:
        run = load_run(options.run_dir, options.device, options.step)
    except RunFolderError as err:
        raise EvalError(str(err)) from err
    except CheckpointError as err:
        hint = "give --step one of the kept steps" if options.step is not None else \
            "train it (python -m repro.train) until it writes a checkpoint"
        raise EvalError(f"{err}: {hint}") from err
    except (ConfigError, json.JSONDecodeError) as err:
        raise EvalError(f"{options.run_dir / 'config.json'} does not describe a run: {err}") from err
    if run.config.model != "inversion":
        raise EvalError(f"{options.run_dir} is a model={run.config.model} run; evaluate measures inversion runs "
                        "(an encoder's layer and a generator): compare autoencoders and VAEs with "
                        "python -m repro.compare_autoencoders, which scores them with the same `measure`")
    return run


def measure_mahendran_vedaldi(model: Any, ref: Reference, options: EvalOptions, device: torch.device,
                              image_metrics: Callable, independent: Any | None = None
                              ) -> tuple[dict[str, Any], torch.Tensor]:
    """M&V's optimisation on the same images and encoder as the generator, scored the same way."""
    mv_config = config_for_layer(model.encoder.tap, steps=options.mv_steps, batch_size=options.batch_size)
    mv = invert_images(model.encoder, ref.images.to(device), mv_config, progress=options.progress)
    mv_images = mv.images.clamp(0, 1).cpu()
    mv_features = batched(model.encode, mv_images, options.batch_size, device, "re-encode M&V", options.progress)
    mv_independent = None if independent is None else batched(independent, mv_images, options.batch_size, device,
                                                              "independent net (M&V)", options.progress)
    result = {"method": "mahendran-vedaldi", "comparator": None, "step": None,
              "mv_config": dataclasses.asdict(mv_config), "mv_final_objective": mv.history[-1],
              "mv_backoffs": mv.backoffs,  # the guard's step-backs (image, step): none means M&V's own run
              **score(ref, mv_images, mv_features, image_metrics, mv_independent)}
    return result, mv_images


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Measure one run; writes metrics.json, metrics.md and the figures into `options.out`; returns the record."""
    started = time.time()
    provenance.git_commit()  # pin the commit of the code now running
    run = open_run(options)
    config, model = run.config, run.parts.model
    device = next(model.parameters()).device
    images, _, data = load_eval_images(config, options.n)
    independent, independent_name = independent_network(config, config.resolution)
    if independent is not None:
        independent = independent.to(device)
    ref = reference_of(model, images, options.batch_size, options.progress, independent)
    image_metrics = image_metric_fn(device, options.batch_size, options.progress)
    scores, reconstructions, features = measure(model, ref, image_metrics, options.batch_size, options.progress,
                                                independent)
    results = [{"method": method_of(config), "comparator": comparator_of(config), "step": run.step,
                "lambdas": {"feat": config.lambda_feat, "adv": config.lambda_adv, "img": config.lambda_img},
                **scores}]

    options.out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(options.out, model, ref, reconstructions, features, device, options.figure_images)
    if options.mv_steps > 0:
        mv_result, mv_images = measure_mahendran_vedaldi(model, ref, options, device, image_metrics, independent)
        results.append(mv_result)
        shown = min(2 * options.figure_images, images.shape[0])
        figures["mv_reconstructions"] = f"mv-reconstructions{FIGURE_SUFFIX}"
        write_grid(options.out / figures["mv_reconstructions"], images[:shown], mv_images[:shown], columns=4)

    record = {
        "run": display_path(options.run_dir),
        "preset": config.preset,
        "layer": config.layer,
        "protocol": protocol_of(config, images.shape[0], tuple(model.encoder.net.taps),
                                tuple(model.generator.in_shape)),
        "normalisers": {"image": ref.image_norm, "feature": ref.feature_norm, "independent": ref.independent_norm},
        "independent_net": independent_name,
        "results": results,
        "figures": figures,
        "provenance": provenance.record(options.command, run_config=config, dev=device, started=started, data=data,
                                        checkpoint=display_path(run.checkpoint), step=run.step,
                                        n_images=images.shape[0]),
    }
    (options.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    (options.out / "metrics.md").write_text(markdown(record))
    return record
