"""Typed, frozen experiment configuration; presets are data, overrides are loud.

Every experiment (inversion of any layer, the ablations, the image-loss baseline, the VAE, the
autoencoders) is one `Config` run by the one loop in `repro.loop`. λ values are in the paper's Caffe
units (see `repro.losses`).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, fields
from typing import Any

from repro.errors import ConfigError
from repro.lambda_rule import PAPER_LAMBDAS, reduced_lambdas
from repro.needs import missing_inputs, uses_discriminator


@dataclass(frozen=True)
class Config:
    preset: str = "small-pool5"          # name of the preset this config started from
    # --- data ---------------------------------------------------------------------------------
    train_data: str = "caltech101"       # shared asset folder name or a path to any image folder
    eval_data: str = "imagenet-1k-256"   # held-out images for grids and metrics
    resolution: int = 64                 # side of the images G makes and D judges: 227 = paper, 64/96/128 = reduced
    encoder_resolution: int = 0          # side the encoder sees (images resized to it; 0 = resolution): 227 at a
                                         # reduced R keeps the paper's code, pool5 256×6×6 (protocol CONV5*)
    comparator_resolution: int = 0       # the same for the comparator C of the feature loss (0 = resolution)
    mirror: bool = True                  # random horizontal flips while training (Caffe's mirror)
    data_cache: bool = True              # keep decoded, warped training images in memory (small sets only)
    data_cache_mb: float = 2048.0        # the cache's budget per training process; images past it are decoded
                                         # every time (a warning says so); Caltech-101 at 227 px needs ~1.8 GB
    data_cache_shared: bool = False      # the cache as one file per node (DEEPSIM_CACHE/warped), mapped by every
                                         # process there (Tune trials, loader workers): one copy per node, and
                                         # data_cache_mb is the node's budget; tune.search turns it on
    num_workers: int = -1                # data loader workers; -1 = automatic
    gpu_decode: bool = False             # decode training JPEGs on the GPU (nvJPEG via torchvision); device=cuda
    eval_images: int = 16                # eval images in the periodic reconstruction grid
    verify_data: bool = True             # check the shared folders' sha256 before training
    # --- model --------------------------------------------------------------------------------
    model: str = "inversion"             # inversion | vae | autoencoder
    encoder: str = "alexnet"             # network whose features are inverted (repro.comparators)
    encoder_weights: str = ""            # user weights file for caffenet/videonet/onnx encoders
    layer: str = "pool5"                 # inverted tap: pool5 (the paper's CONV5), fc6, fc7, fc8
    latent_dim: int = 256                # bottleneck size for vae/autoencoder models
    generator_width: float = 1.0         # channel multiplier; 1.0 = the released prototxts
    discriminator_width: float = 1.0
    discriminator_features: bool = False  # also feed the inverted features y to D (the paper's option)
    init_generator: str = ""             # a generator file (repro.generator_file; "shipped" = the packaged one)
                                         # whose weights start G instead of a random init: warm start from e.g.
                                         # the image-loss solution (our schedule option, not the paper's)
    # --- loss (Caffe units: ½Σ(a−b)²/N on 0–255 images and raw activations) -------------------
    comparator: str = "alexnet"          # C of the feature loss (repro.comparators)
    comparator_tap: str = "pool5"        # the paper used CONV5 = pool5 in most experiments
    comparator_weights: str = ""
    lambda_feat: float = PAPER_LAMBDAS["lambda_feat"]  # 0.01 for the CONV5 comparator (paper §3.2)
    lambda_adv: float = PAPER_LAMBDAS["lambda_adv"]    # 100
    lambda_img: float = PAPER_LAMBDAS["lambda_img"]    # 2e-6
    lambda_kl: float = PAPER_LAMBDAS["lambda_kl"]      # 20, only for model=vae (paper §4.2)
    lambda_img_start: float = 0.0        # > 0: λ_img starts here and falls geometrically to lambda_img over
    lambda_img_decay_steps: int = 0      # this many iterations (our schedule option, not the paper's: G first finds
                                         # the layout and colours an image loss finds fast, then the paper's balance)
    fine_tune_trunk: bool = True         # vae: train the pretrained conv1–5 trunk with the heads (paper §4.2)
    freeze_encoder_steps: int = 0        # vae/autoencoder: the encoder is not updated for this many iterations
                                         # (the decoder first learns to invert its code; repro.autoencoders)
    recon_loss: str = "deepsim"          # deepsim | se | l1 | ssim | ms-ssim (autoencoder baselines)
    # --- optimisation (the original solver) ---------------------------------------------------
    batch_size: int = 64
    steps: int = 1000                    # generator iterations to run in total
    time_limit_min: float = 0.0          # > 0: stop (with a checkpoint and grid) after this many minutes
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    d_weight_decay: float = 4e-4         # weight decay on D only, as in the original solver
    d_loss_weight: float = 100.0         # D's SoftmaxWithLoss `loss_weight: 100` (discriminator.prototxt): D's
                                         # gradient is ×100 before Caffe adds the decay, so the decay is relative
                                         # to the weighted loss (the logged `discr` and the balance stay raw)
    generator_map_decay: float = 4e-4    # weight decay on the pool5 generator's Rconv6–8 weights: decay_mult 1
                                         # in generator_pool5.prototxt × the solver's 4e-4 (all other G: none)
    lr_milestones: tuple[int, ...] = (300_000, 500_000, 700_000, 900_000, 1_100_000)
    lr_gamma: float = 0.5
    pause_d_below: float = 0.1           # stop D while L_discr / L_adv < this
    resume_d_above: float = 0.5          # resume D when the ratio > this
    pause_g_above: float = 10.0          # stop G while the ratio > this
    # --- run ----------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    threads: int = 0                     # torch intra-op threads per worker; 0 = leave torch's default
    log_every: int = 10
    image_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    nonfinite: str = "stop"              # stop | skip: what a NaN/inf loss or gradient does
    channels_last: bool | None = None    # speed option (bench/): memory format of images and convs; None (or
                                         # "auto"): as the device's default path (repro.precision)
    compile: bool = False                # speed option (bench/): torch.compile the model, comparator and D
    amp: str = "auto"                    # speed option (bench/): off | bf16 | fp16 autocast of the forward passes
                                         # (fp16 with loss scaling, for GPUs without bf16) | auto: as the device's
                                         # default path (repro.precision: bf16 where verified and faster, else off)
    micro_batch: int = 0                 # > 0: each worker's batch_size/world_size images go through in
                                         # micro-batches of this size, gradients accumulated (same global batch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def lambda_img_at(config: Config, step: int) -> float:
    """λ_img at iteration `step` (0-based): `lambda_img_start` falling geometrically to `lambda_img` over
    `lambda_img_decay_steps`, then constant; `lambda_img` throughout when no start is set. Geometric, so that the
    image term's share of the loss shrinks evenly (a linear fall keeps it dominant until the last tenth)."""
    if not config.lambda_img_start:
        return config.lambda_img
    if config.lambda_img == 0:  # the no-img ablation: nothing to decay to
        return config.lambda_img_start if step < config.lambda_img_decay_steps else 0.0
    done = min(1.0, step / config.lambda_img_decay_steps)
    return config.lambda_img_start * (config.lambda_img / config.lambda_img_start) ** done


_LAMBDAS_96 = {k: v for k, v in reduced_lambdas(96).items() if k != "lambda_kl"}  # inversions: no KL term


# The reduced-scale pool5 inversion of the default experiment, its baseline and its ablations: 96 px, half
# width, batch 32, 3600 steps (≈ 13 min on 2 idle cores for the full loss; the default's time limit is a safety net).
_POOL5_SMALL = dict(resolution=96, generator_width=0.5, batch_size=32, steps=3600, log_every=10, image_every=300,
                    checkpoint_every=300)

# The common part of the reduced-scale VAE and autoencoder presets.
_AE_SMALL = dict(resolution=64, generator_width=0.5, discriminator_width=0.5, batch_size=32, latent_dim=256,
                 **reduced_lambdas(64), steps=2000, log_every=10, image_every=200, checkpoint_every=200)

# The default experiment: the full loss on that schedule (the time limit is a safety net for slow machines).
_SMALL_POOL5_DEEPSIM = dict(_POOL5_SMALL, discriminator_width=0.5, **_LAMBDAS_96, time_limit_min=14.0)

# Protocol CONV5*: the paper's CONV5 code at a CPU budget. The encoder sees each 96 px image resized to 227 px,
# so the inverted code is exactly the paper's: AlexNet pool5, 256×6×6 = 9,216 values on a 6×6 grid (pool5 of
# the 96 px image itself is 256×2×2 = 1,024 values, the size of the paper's fc8). G starts from the code's own
# 6×6 grid (`Generator` "code" bridge, four ×2 up-convolutions: 16 px per code cell, no pooling); the comparator
# is the same pool5 at 227 px (so C(x) is the code itself), D judges the 96 px images. λ by the rule above
# with the ratio measured for 96 px images seen at 227 px. bf16 autocast + channels_last, set here (not left to
# the device's default, repro.precision) so that every CONV5* run keeps the path its committed results used
# (tests/test_fast_paths.py holds it to eager fp32), ~2× faster here (AVX-512 BF16).
# 2400 iterations: ≤ 20 min on 2 idle cores (`make train`). The DeePSiM presets start with λ_img 100× the
# paper's, falling geometrically to it over 1500 iterations (`lambda_img_start`, our option): on this budget the
# paper's constant λ is still painting checkerboard textures at 1000 iterations (results/conv5star).
_STAR = dict(resolution=96, encoder_resolution=227, comparator_resolution=227, generator_width=0.5,
             discriminator_width=0.5, batch_size=32, amp="bf16", channels_last=True, steps=2400, log_every=10,
             image_every=300, checkpoint_every=300, keep_checkpoints=30)
_LAMBDAS_STAR = {k: v for k, v in reduced_lambdas(96, comparator_resolution=227).items() if k != "lambda_kl"}
_LAMBDAS_WARM = dict(_LAMBDAS_STAR, lambda_feat=round(100 * _LAMBDAS_STAR["lambda_feat"], 5))
_WARM_START = dict(lambda_img_start=2e-4, lambda_img_decay_steps=1500)  # 100× the paper's 2e-6

# The original setup of the paper's inversions. Nothing here can be had without the user's files:
# `encoder_weights` (bvlc_reference_caffenet.caffemodel, also the comparator's unless comparator_weights says
# otherwise) and `train_data` (the ILSVRC-2012 training folder or a Caffe-style train.txt) are required, so
# `validate` refuses the preset with one line naming them. D sees the features: the original training copy
# names "do not feed fmri to the discriminator" as its modification of the paper's script, so the paper's D
# was conditioned on the code (the branch's layout is still a guess, see repro.nets.discriminator).
_PAPER = dict(resolution=227, encoder="caffenet", comparator="caffenet", train_data="", discriminator_features=True,
              data_cache=False, steps=1_000_000, image_every=2000, checkpoint_every=10_000)

# Presets: data, not code. Each is a set of overrides of the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # What `make train` runs: invert pool5 of the pretrained AlexNet with DeePSiM, comparator = the same
    # pool5, at reduced resolution on Caltech-101 (≤ 15 minutes on 2 CPU cores).
    "small-pool5": _SMALL_POOL5_DEEPSIM,
    # small-pool5 with the λ of the best trial of the committed search towards Table 2's AlexNet CONV5 cell
    # (results/tune/small-pool5-pool5-20261202-cpu/best.json: 6 trials of 600 steps; its "preset" entry).
    "small-pool5-tuned": dict(_SMALL_POOL5_DEEPSIM, lambda_feat=0.0519, lambda_adv=11.7, lambda_img=5.76e-06),
    # Dosovitskiy & Brox 2016a baseline: image loss only (the paper's "Our image loss" row).
    "small-pool5-image": dict(_POOL5_SMALL, lambda_feat=0.0, lambda_adv=0.0),
    # Longer CPU runs of the same experiment at 96 px (the ≥ 1 h comparison of issue 4).
    "cpu-pool5": dict(resolution=96, generator_width=0.5, discriminator_width=0.5, batch_size=32, steps=100_000,
                      **_LAMBDAS_96,
                      time_limit_min=65.0, image_every=250, checkpoint_every=250),
    "cpu-pool5-image": dict(resolution=96, generator_width=0.5, batch_size=32, steps=100_000, lambda_feat=0.0,
                            lambda_adv=0.0, time_limit_min=65.0, image_every=250, checkpoint_every=250),
    # Paper scale (GPU), the original setup: 227×227, batch 64, full width, the user's CaffeNet as encoder and
    # comparator, their ILSVRC-2012 training set, D conditioned on the inverted features (`_PAPER`).
    **{f"paper-{tap}": dict(_PAPER, layer=tap) for tap in ("pool5", "fc6", "fc7", "fc8")},
    # Ablations of Fig. 1 at the scale of small-pool5 (same steps, so that the full loss is compared with each
    # ablation at equal training): drop one term each.
    "ablation-no-adv": dict(_POOL5_SMALL, **dict(_LAMBDAS_96, lambda_adv=0.0)),
    "ablation-no-feat": dict(_POOL5_SMALL, discriminator_width=0.5, **dict(_LAMBDAS_96, lambda_feat=0.0)),
    "ablation-no-img": dict(_POOL5_SMALL, discriminator_width=0.5, lambda_img=0.0, **_LAMBDAS_96),
    # Depth (Table 2 left to right) on a network whose every layer is obtainable here: invert pool5, fc6, fc7
    # and fc8 of the random-weight CaffeNet (the paper's third comparator, Caffe's initialisation, seed 0) with
    # the full loss and the pretrained AlexNet pool5 comparator, at 96 px, 2000 steps each.
    **{f"random-{tap}": dict(_POOL5_SMALL, encoder="caffenet-random", layer=tap, steps=2000, discriminator_width=0.5,
                             **_LAMBDAS_96) for tap in ("pool5", "fc6", "fc7", "fc8")},
    # The class-score analogue of FC8 on a real classifier: invert SqueezeNet's last conv block (fire9) and its
    # class scores (pool_final), same loss and schedule as the random-CaffeNet series.
    **{f"squeezenet-{name}": dict(_POOL5_SMALL, encoder="squeezenet", layer=tap, steps=2000, discriminator_width=0.5,
                                  **_LAMBDAS_96)
       for name, tap in (("fire9", "fire9/concat"), ("scores", "pool_final"))},
    # Autoencoders of the loss comparison (arXiv v1; `python -m repro.compare_autoencoders`): one architecture
    # (repro.autoencoders), four reconstruction losses, at 64 px.
    **{f"ae-{loss}": dict(_AE_SMALL, model="autoencoder", recon_loss=loss) for loss in ("se", "l1", "ms-ssim", "deepsim")},
    # Fig. 8a: "the usual SE loss". Eq. 7 with a Gaussian decoder of fixed σ_x gives ½Σ(Δ/σ_x)² + KL; our se
    # loss is ½Σ(255·Δ)²/N, so the KL weight is (255·σ_x)². σ_x = 0.1 of the range (≈ the RMS error of a
    # blurry reconstruction, the maximum-likelihood σ there) → λ_KL = 650.25. Our choice: the paper gives none.
    # Its trunk is fine-tuned as in the paper: the SE term's gradient keeps pool5 alive (it identifies its
    # originals, results/autoencoders), unlike the DeePSiM VAE's below.
    "vae-se": dict(_AE_SMALL, model="vae", recon_loss="se", lambda_kl=650.25),
    # Fig. 8b: the DeePSiM VAE (paper §4.2): DeePSiM loss (AlexNet pool5 comparator, D, image term) + λ_KL, the
    # paper's 20 at 227 px, here by the reduced-scale rule (1.59 at 64 px, in _AE_SMALL). The pretrained trunk is
    # held (the paper fine-tunes it): fine-tuned with Adam under any λ_KL > 0 its pool5 ReLUs die within ~20
    # iterations and the posterior collapses for good (python -m repro.vae_probe;
    # results/autoencoders/20261204-cpu/vae-long/NOTE.md). 4800 iterations: the published run.
    "vae": dict(_AE_SMALL, model="vae", recon_loss="deepsim", fine_tune_trunk=False, steps=4800, image_every=600,
                checkpoint_every=1200, keep_checkpoints=4),
    # The principle of protocol CONV5* for the DeePSiM autoencoder and VAE: their comparator sees a 227 px copy
    # of each 64 px image, so the feature term compares pool5 maps of 6×6 (at 64 px pool5 is 1×1, one value per
    # channel: no layout left to compare); λ by the rule with the ratio measured for 64 px images seen at 227
    # px. The encoder, G and D keep working at 64 px. (The published vae / ae-deepsim runs predate these.)
    "ae-deepsim-conv5star": dict(_AE_SMALL, model="autoencoder", recon_loss="deepsim", comparator_resolution=227,
                                 **reduced_lambdas(64, comparator_resolution=227)),
    "vae-conv5star": dict(_AE_SMALL, model="vae", recon_loss="deepsim", fine_tune_trunk=False, steps=4800,
                          image_every=600, checkpoint_every=1200, keep_checkpoints=4, comparator_resolution=227,
                          **reduced_lambdas(64, comparator_resolution=227)),
    # Protocol CONV5* (above): the full DeePSiM loss, its image-loss baseline (Dosovitskiy & Brox 2016a) and
    # the ablations of Fig. 1, all on one schedule so that they compare at equal steps.
    # (no-img has no image term to warm-start with; the image loss alone gains nothing from a scale on its λ).
    "conv5star": dict(_STAR, **_LAMBDAS_STAR, **_WARM_START, time_limit_min=20.0),
    "conv5star-image": dict(_STAR, lambda_feat=0.0, lambda_adv=0.0),
    "conv5star-no-adv": dict(_STAR, **dict(_LAMBDAS_STAR, lambda_adv=0.0), **_WARM_START),
    "conv5star-no-feat": dict(_STAR, **dict(_LAMBDAS_STAR, lambda_feat=0.0), **_WARM_START),
    "conv5star-no-img": dict(_STAR, **dict(_LAMBDAS_STAR, lambda_img=0.0)),
    # CONV5* warm-started (our schedule, not the paper's): G starts from the shipped image-loss generator
    # (repro/generators, 4500 iterations of conv5star-image), then trains with the full loss. λ_feat is 100× the
    # rule's: the rule keeps the torchvision AlexNet's balance, which is not CaffeNet's (unknown, and networks
    # differ by up to ~4000×), and at the rule's value the feature term never fell (results/conv5star). From
    # this start, ×1 / ×100 / ×300 gave own-original identification in feature space of 1.2 / 16 / – % at 500
    # iterations (×300 had the higher feature term at 250; results/conv5star-warm/README.md). -image continues
    # the image loss from the same start (the baseline at equal iterations), -no-adv drops D.
    # The default (make train): 2000 iterations, which 2 idle cores finish inside the 20-minute limit (1.87 it/s
    # measured under Ray, 2 threads); the published runs were scheduled for 3000 and are compared at 2500.
    "conv5star-warm": dict(_STAR, **_LAMBDAS_WARM, init_generator="shipped", steps=2000, time_limit_min=20.0,
                           checkpoint_every=250),
    "conv5star-warm-image": dict(_STAR, lambda_feat=0.0, lambda_adv=0.0, init_generator="shipped", steps=3000,
                                 checkpoint_every=250),
    "conv5star-warm-no-adv": dict(_STAR, **dict(_LAMBDAS_WARM, lambda_adv=0.0), init_generator="shipped",
                                  steps=3000, checkpoint_every=250),
    # The other two ablations of Fig. 1 and the paper's third comparator on the same warm schedule (issue 28):
    # -no-feat drops the feature term, -no-img the image term (both start from the same image-loss G, so no-img
    # starts from an image loss it then drops), -random-comparator swaps C for the random-weight CaffeNet's pool5
    # (Caffe's initialisation, seed 0) while the encoder stays the pretrained AlexNet's; its feature scale
    # (repro.comparators.FEATURE_IMAGE_RATIO, s = 20.3) puts it in the reference's units, so λ_feat is unchanged.
    "conv5star-warm-no-feat": dict(_STAR, **dict(_LAMBDAS_WARM, lambda_feat=0.0), init_generator="shipped",
                                   steps=3000, checkpoint_every=250),
    "conv5star-warm-no-img": dict(_STAR, **dict(_LAMBDAS_WARM, lambda_img=0.0), init_generator="shipped",
                                  steps=3000, checkpoint_every=250),
    "conv5star-warm-random-comparator": dict(_STAR, **_LAMBDAS_WARM, comparator="caffenet-random",
                                             init_generator="shipped", steps=3000, checkpoint_every=250),
    # Tiny configuration for tests and --dry-run style smoke runs.
    "smoke": dict(resolution=64, generator_width=0.125, discriminator_width=0.25, batch_size=4, steps=2,
                  eval_images=4, log_every=1, image_every=2, checkpoint_every=1, data_cache=False, num_workers=0,
                  verify_data=False),
}


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def _parse(key: str, raw: Any, kind: Any) -> Any:
    if type(None) in typing.get_args(kind):  # X | None: None (or "auto") is left for the run to resolve
        if raw is None or (isinstance(raw, str) and raw.lower() == "auto"):
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if not isinstance(raw, str):
        value = raw
    elif kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{key}: expected true/false, got {raw!r}")
        value = raw.lower() in ("true", "1", "yes")
    elif typing.get_origin(kind) is tuple:
        try:
            value = tuple(int(v) for v in raw.strip("()[] ").split(",") if v.strip())
        except ValueError as err:
            raise ConfigError(f"{key}: expected comma-separated integers, got {raw!r}") from err
    else:
        try:
            value = kind(raw)
        except ValueError as err:
            raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}") from err
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{key}: expected a list of integers, got {value!r}")
        return tuple(int(v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def make_config(preset: str = "small-pool5", overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← preset ← overrides; unknown keys and wrong types fail with the key named."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    kinds = _field_types()
    values: dict[str, Any] = {"preset": preset}
    for source in (PRESETS[preset], overrides or {}):
        for key, raw in source.items():
            if key not in kinds:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(kinds)}")
            values[key] = _parse(key, raw, kinds[key])
    # One weights file serves a comparator that is the encoder's network (the paper's setup): name it once.
    if (values.get("comparator", Config.comparator) == values.get("encoder", Config.encoder)
            and not values.get("comparator_weights") and values.get("encoder_weights")):
        values["comparator_weights"] = values["encoder_weights"]
    config = Config(**values)
    validate(config)
    return config


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from its saved JSON (e.g. a run folder's config.json), types checked."""
    data = dict(data)
    preset = data.pop("preset", "small-pool5")
    # a saved config without the speed fields predates them (and the per-device default): it ran eager fp32
    data.setdefault("amp", "off")
    data.setdefault("channels_last", False)
    kinds = _field_types()
    values = {k: _parse(k, v, kinds[k]) if k in kinds else v for k, v in data.items()}
    unknown = set(values) - set(kinds)
    if unknown:
        raise ConfigError(f"config has unknown keys {sorted(unknown)}")
    config = Config(preset=preset, **values)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that would otherwise fail deep inside a run."""
    choices = {"model": ("inversion", "vae", "autoencoder"), "nonfinite": ("stop", "skip"),
               "recon_loss": ("deepsim", "se", "l1", "ssim", "ms-ssim"), "device": ("auto", "cpu", "cuda"),
               "amp": ("auto", "off", "bf16", "fp16")}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key}={getattr(config, key)!r}; choose from {', '.join(allowed)}")
    if config.time_limit_min < 0:
        raise ConfigError("time_limit_min must be ≥ 0 (0 = no limit)")
    if config.resolution < 32:
        raise ConfigError(f"resolution={config.resolution} is too small for AlexNet (≥ 32)")
    for key in ("encoder_resolution", "comparator_resolution"):
        side = getattr(config, key)
        if side and side < 32:
            raise ConfigError(f"{key}={side} is too small for AlexNet (≥ 32; 0 = the images' resolution)")
    if uses_discriminator(config) and config.resolution < DISCRIMINATOR_MIN_RESOLUTION:
        raise ConfigError(f"resolution={config.resolution} is below the discriminator's minimum of "
                          f"{DISCRIMINATOR_MIN_RESOLUTION} px (its unpadded convolutions shrink the map to nothing); "
                          f"use resolution ≥ {DISCRIMINATOR_MIN_RESOLUTION}, or lambda_adv=0 (no D)")
    for key in ("batch_size", "steps", "log_every", "image_every", "checkpoint_every", "eval_images"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be ≥ 1, got {getattr(config, key)}")
    if not config.lr > 0:
        raise ConfigError(f"lr must be > 0, got {config.lr}")
    if config.num_workers < -1:
        raise ConfigError(f"num_workers={config.num_workers}: data loader workers are ≥ 0, or -1 for automatic")
    if config.data_cache_mb < 0:
        raise ConfigError("data_cache_mb must be ≥ 0 (0 = nothing cached)")
    if config.init_generator and config.model != "inversion":
        raise ConfigError(f"init_generator warm-starts an inversion's generator; model={config.model} has none to "
                          "start from a generator file")
    if config.micro_batch < 0:
        raise ConfigError("micro_batch must be ≥ 0 (0 = each worker's whole batch in one pass)")
    for key in ("lambda_feat", "lambda_adv", "lambda_img", "lambda_kl", "freeze_encoder_steps", "lambda_img_start",
                "lambda_img_decay_steps"):
        if getattr(config, key) < 0:
            raise ConfigError(f"{key} must be ≥ 0")
    if config.lambda_img_start and (config.lambda_img_decay_steps < 1 or config.lambda_img_start < config.lambda_img):
        raise ConfigError(f"lambda_img_start={config.lambda_img_start} needs lambda_img_decay_steps ≥ 1 and a start ≥ "
                          f"lambda_img={config.lambda_img} (it decays to lambda_img)")
    if config.freeze_encoder_steps and config.model not in ("vae", "autoencoder"):
        raise ConfigError(f"freeze_encoder_steps is for model=vae or autoencoder, not {config.model} "
                          "(an inversion's encoder is never trained)")
    if not config.fine_tune_trunk and config.model != "vae":
        raise ConfigError(f"fine_tune_trunk=false is for model=vae (its pretrained trunk), not {config.model}")
    missing = missing_inputs(config)
    if missing:
        raise ConfigError(f"{config.preset} needs files that are not obtainable here; give " + "; ".join(missing))


# Dconv1–5 of repro.nets.discriminator are unpadded: below this side they leave no map (`min_resolution()`;
# a test pins the two together). Here as a number so that this module stays free of torch.
DISCRIMINATOR_MIN_RESOLUTION = 63
