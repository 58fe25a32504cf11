"""The one training loop. Every experiment (inversion, ablations, baselines, VAE, autoencoders) is a
`Config` for this loop; it knows nothing of Ray (the launcher passes a `Session`).

Per iteration, as the original training script:
  real features C(x) → G(y) → C(G(y)) → (1) D on real and fake, D update if D trains →
  (2) D on fake labelled "real" gives L_adv, G update if G trains → the balancing rule.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from repro import checkpoint
from repro.comparators import Comparator, build_comparator
from repro.config import Config
from repro.data import ImageFolder, infinite_batches, load_images, list_images, make_loader
from repro.losses import discriminator_loss, generator_terms
from repro.models import Inverter, feature_shape
from repro.nets.discriminator import Discriminator
from repro.nets.generator import Generator

log = logging.getLogger(__name__)


class NonFiniteLoss(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the term and the last good checkpoint."""


@dataclass
class Session:
    """What a launcher gives the loop: who we are, where to report, what to resume from."""

    rank: int = 0
    world_size: int = 1
    report: Callable[[dict[str, Any], Path | None], None] = lambda metrics, ckpt: None
    resume_state: dict[str, Any] | None = None
    show_progress: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Balance:
    """The original balancing rule on raw losses, ratio = L_discr / L_adv.

    D stops while the ratio < `pause_d_below` (it is winning too easily and would overfit) and resumes
    when it exceeds `resume_d_above`; G stops while the ratio > `pause_g_above` (D is losing badly) and
    resumes when it falls again.
    """

    pause_d_below: float = 0.1
    resume_d_above: float = 0.5
    pause_g_above: float = 10.0
    stuck_after: int = 1000  # warn when D has been paused this many consecutive steps (and every as many after)
    d_training: bool = True
    g_training: bool = True
    d_paused_steps: int = 0  # consecutive steps D has been paused, this one included
    history: list[str] = field(default_factory=list)

    def update(self, ratio: float, step: int) -> list[str]:
        events = []
        if self.d_training and ratio < self.pause_d_below:
            self.d_training = False
            events.append(f"step {step}: pause D (L_discr/L_adv = {ratio:.3g} < {self.pause_d_below})")
        elif not self.d_training and ratio > self.resume_d_above:
            self.d_training = True
            events.append(f"step {step}: resume D (ratio {ratio:.3g} > {self.resume_d_above})")
        self.d_paused_steps = 0 if self.d_training else self.d_paused_steps + 1
        if self.d_paused_steps and self.d_paused_steps % self.stuck_after == 0:
            # The rule has no way out but a ratio above resume_d_above: a D that wins by far for this long
            # has collapsed the adversarial signal (G trains on L_adv from a frozen D). Say so loudly.
            log.warning("step %d: D paused for %d consecutive steps (L_discr/L_adv = %.3g, resumes above %s): "
                        "the discriminator may have collapsed; check the adversarial terms in stats.jsonl",
                        step, self.d_paused_steps, ratio, self.resume_d_above)
        if self.g_training and ratio > self.pause_g_above:
            self.g_training = False
            events.append(f"step {step}: pause G (ratio {ratio:.3g} > {self.pause_g_above})")
        elif not self.g_training and ratio <= self.pause_g_above:
            self.g_training = True
            events.append(f"step {step}: resume G (ratio {ratio:.3g} ≤ {self.pause_g_above})")
        self.history.extend(events)
        return events

    def state_dict(self) -> dict[str, Any]:
        return {"d_training": self.d_training, "g_training": self.g_training, "d_paused_steps": self.d_paused_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d_training, self.g_training = bool(state["d_training"]), bool(state["g_training"])
        self.d_paused_steps = int(state.get("d_paused_steps", 0))  # absent in checkpoints of older runs


def resolve_folder(name_or_path: str, verify: bool) -> Path:
    """A shared asset folder by name (sha256-checked) or any folder path the user gives."""
    from repro.assets import FOLDER_SHA256, asset_folder

    if name_or_path in FOLDER_SHA256:
        return asset_folder(name_or_path, verify=verify)
    path = Path(name_or_path)
    list_images(path)  # clear error when missing or empty
    return path


def pick_device(config: Config) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class Parts:
    """Everything the loop trains or consults, built from a Config."""

    model: nn.Module
    comparator: Comparator | None
    discriminator: Discriminator | None
    shares_features: bool  # comparator == encoder at the same tap: reuse C(x) = y


def build_parts(config: Config, device: torch.device) -> Parts:
    torch.manual_seed(config.seed)  # identical initial weights on every worker
    lambdas = lambdas_of(config)
    if config.model != "inversion":
        from repro.autoencoders import build_model  # VAE / autoencoder presets

        model, encoder = build_model(config)
    else:
        encoder = build_comparator(config.encoder, config.layer, config.resolution, config.encoder_weights or None,
                                   seed=config.seed)
        generator = Generator(feature_shape(encoder, config.resolution), resolution=config.resolution,
                              width=config.generator_width)
        model = Inverter(encoder, generator)
    needs_comparator = config.recon_loss == "deepsim" and lambdas["feat"] > 0
    same = (config.model == "inversion" and config.comparator == config.encoder
            and config.comparator_weights == config.encoder_weights)
    comparator = None
    if needs_comparator:
        if same and config.comparator_tap == config.layer:
            comparator = encoder
        elif same:
            comparator = Comparator(encoder.net, config.comparator_tap, config.comparator)
        else:
            comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                          config.comparator_weights or None, seed=config.seed)
    discriminator = None
    if config.recon_loss == "deepsim" and lambdas["adv"] > 0:
        feature_dim = None
        if config.discriminator_features:
            code_shape = feature_shape(encoder, config.resolution)
            feature_dim = math.prod(code_shape)
        discriminator = Discriminator(resolution=config.resolution, width=config.discriminator_width,
                                      feature_dim=feature_dim)
    parts = Parts(model, comparator, discriminator,
                  shares_features=comparator is encoder and config.model == "inversion")
    for module in (parts.model, parts.comparator, parts.discriminator):
        if module is not None:
            module.to(device)
            if config.channels_last:
                module.to(memory_format=torch.channels_last)
    if config.compile:
        compile_parts(parts)
    return parts


def compile_parts(parts: Parts) -> None:
    """torch.compile the encoder, generator, comparator and D in place (`Module.compile`: state_dict keys and
    checkpoints stay those of the eager modules). Encoder and generator are compiled separately (the encoder
    runs without grad, the generator with), and a comparator that is the encoder is compiled once."""
    model = parts.model
    units = [model.encoder, model.generator] if isinstance(model, Inverter) else [model]
    seen: set[int] = set()
    for module in (*units, parts.comparator, parts.discriminator):
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            module.compile()


def make_adam(params: list[nn.Parameter], device: torch.device, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fastest implementation of the same update rule: fused kernels on CUDA and CPU (3–4×
    faster than the per-tensor loop on CPU, bench/), the multi-tensor (foreach) path elsewhere; equal to the
    per-tensor loop up to float rounding."""
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(params, **kwargs, **fast)


def as_float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Losses are computed in fp32 even under bf16 autocast (a no-op on fp32 tensors)."""
    return None if tensor is None else tensor.float()


def lambdas_of(config: Config) -> dict[str, float]:
    return {"feat": config.lambda_feat, "adv": config.lambda_adv, "img": config.lambda_img,
            "kl": config.lambda_kl if config.model == "vae" else 0.0}


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def all_reduce_mean(values: torch.Tensor, session: Session) -> torch.Tensor:
    if session.world_size > 1 and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= session.world_size
    return values


def sync_gradients(params: list[nn.Parameter], session: Session) -> None:
    """Average gradients across workers (data parallel). Written by hand instead of DDP because each
    phase runs D several times per step (real, fake, fake-for-G), which DDP's hooks do not allow."""
    if session.world_size <= 1 or not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= session.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def grads_finite(params: list[nn.Parameter], device: torch.device) -> torch.Tensor:
    """1.0 if every gradient is finite, else 0.0, as a tensor on `device`: no host sync here."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), device=device)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, float("inf"))).float()


class Trainer:
    """Holds the state of one run; `step()` is one iteration, `run()` the whole schedule."""

    def __init__(self, config: Config, run_dir: Path, session: Session | None = None):
        self.config, self.run_dir = config, Path(run_dir)
        self.session = session or Session()
        self.device = pick_device(config)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.parts = build_parts(config, self.device)
        self.lambdas = lambdas_of(config)
        betas = (config.beta1, config.beta2)
        self.g_params = trainable(self.parts.model)
        self.opt_g = make_adam(self.g_params, self.device, lr=config.lr, betas=betas)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(config.lr_milestones), config.lr_gamma)
        self.d_params: list[nn.Parameter] = []
        self.opt_d = self.sched_d = None
        if self.parts.discriminator is not None:
            self.d_params = trainable(self.parts.discriminator)
            self.opt_d = make_adam(self.d_params, self.device, lr=config.lr, betas=betas,
                                   weight_decay=config.d_weight_decay)
            self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(config.lr_milestones), config.lr_gamma)
        self.balance = Balance(config.pause_d_below, config.resume_d_above, config.pause_g_above)
        self.step_count = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.skipped = 0
        self.last_checkpoint: Path | None = None
        if self.session.resume_state is not None:
            self.load_state_dict(self.session.resume_state)

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        d = self.parts.discriminator
        return {
            "config": self.config.to_json(),
            "step": self.step_count, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "skipped": self.skipped,
            "model": {k: v for k, v in self.parts.model.state_dict().items()},
            "discriminator": d.state_dict() if d is not None else {},
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else {},
            "sched_d": self.sched_d.state_dict() if self.sched_d else {},
            "balance": self.balance.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = json.loads(state["config"])
        mismatched = {k for k in ("model", "encoder", "layer", "resolution", "generator_width", "discriminator_width",
                                  "comparator", "comparator_tap", "latent_dim", "discriminator_features")
                      if saved.get(k) != getattr(self.config, k)}
        if mismatched:
            raise checkpoint.CheckpointError(
                f"checkpoint was made with a different architecture ({', '.join(sorted(mismatched))} differ); "
                "resume it with its own config.json"
            )
        self.parts.model.load_state_dict(state["model"], strict=True)
        if self.parts.discriminator is not None:
            self.parts.discriminator.load_state_dict(state["discriminator"], strict=True)
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.balance.load_state_dict(state["balance"])
        self.step_count, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.skipped = int(state["batch_in_epoch"]), int(state["skipped"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ---- one iteration ------------------------------------------------------------------------
    def autocast(self):
        """bf16 autocast of the forward passes when `amp="bf16"`; losses stay fp32 (`as_float`)."""
        if self.config.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, real: torch.Tensor) -> dict[str, float]:
        cfg, parts, session = self.config, self.parts, self.session
        real = real.to(self.device, non_blocking=True)
        if cfg.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        parts.model.train()
        with self.autocast():
            fake, aux = parts.model(real)

        fake_features = real_features = None
        if parts.comparator is not None:
            with torch.no_grad(), self.autocast():
                real_features = aux["code"] if parts.shares_features else parts.comparator(real)
            with self.autocast():
                fake_features = parts.comparator(fake)
            real_features = real_features.reshape(fake_features.shape)  # a reused code may be flattened (feature_shape)

        d = parts.discriminator
        values: dict[str, torch.Tensor] = {}
        condition = aux["code"].flatten(1) if (d is not None and cfg.discriminator_features) else None
        # (1) update D on real and (detached) fake images, unless the balancing rule paused it.
        if d is not None:
            d.train()
            d.requires_grad_(self.balance.d_training)
            with torch.set_grad_enabled(self.balance.d_training):
                with self.autocast():
                    logits_real, logits_generated = d(real, condition), d(fake.detach(), condition)
                d_loss = discriminator_loss(as_float(logits_real), as_float(logits_generated))
            values["discr"] = d_loss.detach()
            if self.balance.d_training:
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                sync_gradients(self.d_params, session)
            d.requires_grad_(False)

        # (2) update G: D sees the fake labelled "real"; D's weights get no gradient here.
        with self.autocast():
            logits_fake = d(fake, condition) if d is not None else None
        terms = generator_terms(as_float(fake), real, self.lambdas, fake_features=as_float(fake_features),
                                real_features=as_float(real_features), logits_fake=as_float(logits_fake),
                                mu=as_float(aux.get("mu")), logvar=as_float(aux.get("logvar")),
                                recon=cfg.recon_loss)
        values.update({k: v.detach() for k, v in terms.items()})
        if self.balance.g_training:
            self.opt_g.zero_grad(set_to_none=True)
            terms["total"].backward()
            sync_gradients(self.g_params, session)

        # Non-finite check on every term and gradient, agreed across workers, before any step. Terms and
        # gradient flags travel in one tensor: one all-reduce and the step's only host-device sync
        # (`tolist`), which the balancing rule needs anyway.
        names = sorted(values)
        no_check = torch.ones((), device=self.device)
        checks = torch.stack([values[k].float() for k in names] + [
            grads_finite(self.g_params, self.device) if self.balance.g_training else no_check,
            grads_finite(self.d_params, self.device) if (d is not None and self.balance.d_training) else no_check])
        *terms_mean, finite_g, finite_d = all_reduce_mean(checks, session).tolist()
        reduced = dict(zip(names, terms_mean))
        bad = [k for k, v in reduced.items() if not math.isfinite(v)]
        if finite_g < 1:
            bad.append("generator gradients")
        if finite_d < 1:
            bad.append("discriminator gradients")
        if bad:
            where = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
            message = f"non-finite {', '.join(bad)} at step {self.step_count} ({where})"
            if cfg.nonfinite == "stop":
                raise NonFiniteLoss(message)
            log.warning("%s; skipping this update", message)
            self.opt_g.zero_grad(set_to_none=True)
            if self.opt_d:
                self.opt_d.zero_grad(set_to_none=True)
            self.skipped += 1
            reduced["skipped"] = 1.0
            return reduced

        if d is not None and self.balance.d_training:
            self.opt_d.step()
        if self.balance.g_training:
            self.opt_g.step()
        # The learning-rate schedule counts iterations, as Caffe's solver does, whether or not the balancing
        # rule paused a network this step; torch warns when a scheduler steps before its optimizer ever has.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.sched_g.step()
            if self.sched_d:
                self.sched_d.step()
        if d is not None:
            ratio = reduced["discr"] / max(reduced["adv"], 1e-12) if "adv" in reduced else float("inf")
            reduced["ratio"] = ratio
            for event in self.balance.update(ratio, self.step_count):
                log.info(event)
                if session.is_main:
                    tqdm.write(event)
            reduced["d_paused_steps"] = float(self.balance.d_paused_steps)
        reduced["d_training"] = float(self.balance.d_training)
        reduced["g_training"] = float(self.balance.g_training)
        reduced["lr"] = self.opt_g.param_groups[0]["lr"]
        return reduced

    # ---- evaluation grid ----------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        self.parts.model.eval()
        images = images.to(self.device)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = self.parts.model(images)[0]
        self.parts.model.train()
        return out.float().cpu()


def write_grid(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor, columns: int = 4) -> None:
    """Pairs (target | reconstruction) side by side, `columns` pairs per row."""
    from torchvision.utils import save_image

    pairs = torch.stack([targets, reconstructions.clamp(0, 1)], 1).flatten(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(pairs, path, nrow=2 * columns, padding=2, pad_value=1.0)


class RunLog:
    """stats.jsonl + metrics.csv + TensorBoard, written by the main worker only."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}}
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / "metrics.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k, v in values.items():
            self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(config: Config, run_dir: Path, session: Session | None = None) -> dict[str, Any]:
    """Run (or continue) the schedule of `config`; returns a summary. The same function runs in-process
    (`--launcher local`) and inside every Ray Train worker."""
    session = session or Session()
    run_dir = Path(run_dir)
    trainer = Trainer(config, run_dir, session)
    per_worker = max(1, config.batch_size // session.world_size)
    dataset = ImageFolder(resolve_folder(config.train_data, config.verify_data and session.is_main),
                          config.resolution, train=True, mirror=config.mirror, cache=config.data_cache)
    loader = make_loader(dataset, per_worker, seed=config.seed, rank=session.rank, world_size=session.world_size,
                         num_workers=None if config.num_workers < 0 else config.num_workers)
    eval_files = list_images(resolve_folder(config.eval_data, False))[: config.eval_images]
    eval_images = load_images(eval_files, config.resolution)
    runlog = RunLog(run_dir, session.is_main)
    batches = infinite_batches(loader, start_epoch=trainer.epoch, skip=trainer.batch_in_epoch)
    progress = tqdm(total=config.steps, initial=trainer.step_count, desc=config.preset, unit="step",
                    disable=not (session.is_main and session.show_progress), dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    deadline = time.monotonic() + 60 * config.time_limit_min if config.time_limit_min > 0 else math.inf
    values: dict[str, float] = {}
    try:
        while trainer.step_count < config.steps:
            epoch, batch_in_epoch, real = next(batches)
            values = trainer.step(real)
            trainer.step_count += 1
            trainer.epoch, trainer.batch_in_epoch = epoch, batch_in_epoch + 1
            window_images += real.shape[0] * session.world_size
            step = trainer.step_count
            # every worker must agree to stop at the same step (time limits differ by clock skew)
            out_of_time = bool(all_reduce_mean(torch.tensor([float(time.monotonic() > deadline)]), session)[0] > 0)
            last = step == config.steps or out_of_time
            if step % config.log_every == 0 or last:  # the last step is always logged, also when time runs out
                elapsed = time.perf_counter() - window_start
                values["images_per_s"] = window_images / max(elapsed, 1e-9)
                window_start, window_images = time.perf_counter(), 0
                runlog.write(step, values)
                progress.set_postfix({k: f"{values[k]:.3g}" for k in ("total", "feat", "adv", "img", "discr",
                                                                       "images_per_s") if k in values})
            progress.update(1)
            if session.is_main and (step % config.image_every == 0 or last):
                recon = trainer.reconstruct(eval_images)
                write_grid(run_dir / "grids" / f"step-{step:08d}.png", eval_images, recon)
                write_grid(run_dir / "grid-latest.png", eval_images, recon)
            ckpt_dir = None
            if step % config.checkpoint_every == 0 or last:
                if session.is_main:
                    ckpt_dir = checkpoint.save(run_dir / "checkpoints", step, trainer.state_dict(),
                                               keep=config.keep_checkpoints)
                    trainer.last_checkpoint = ckpt_dir
                session.report({"step": step, **values}, ckpt_dir)
            if out_of_time:
                tqdm.write(f"time limit of {config.time_limit_min} min reached at step {step}")
                break
    finally:
        progress.close()
        runlog.close()
    return {"step": trainer.step_count, "skipped": trainer.skipped, "last": values,
            "balance_events": trainer.balance.history, "checkpoint": str(trainer.last_checkpoint)}
