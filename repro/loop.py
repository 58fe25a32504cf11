"""The one training loop. Every experiment (inversion, ablations, baselines, VAE, autoencoders) is a
`Config` for this loop; it knows nothing of Ray (the launcher passes a `Session`).

Per iteration, as the original training script:
  real features C(x) → G(y) → C(G(y)) → (1) D on real and fake, D update if D trains (`Trainer.d_step`) →
  (2) D, after its update, on fake labelled "real" gives L_adv, G update if G trains (`Trainer.g_step`) →
  the balancing rule (`repro.balance.Balance`). Both updates are the one `Trainer.update`; `train` runs the
  schedule (data, log, grids, checkpoints, reports, time limit).
The losses are `repro.losses.DeePSiMLoss`, the class a user imports for a loop of their own. The optimisers and
the device-side step are `repro.optim`; what the workers say to each other, and each one's random stream,
`repro.distributed`; the run folder's log is `repro.runs.RunLog`; what a checkpoint holds and which config a
resume may change, `repro.checkpoint`.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from repro import checkpoint, precision, provenance
from repro.balance import Balance
from repro.config import Config, lambda_img_at
from repro.data import infinite_batches, list_images, load_images, resolve_folder, training_loader
from repro.devices import pick_device
from repro.distributed import (GradReducer, all_reduce_mean, broadcast_tensors, gather_object, restore_stream,
                               stream_seed, stream_state)
from repro.errors import DeepsimError
from repro.grids import FIGURE_SUFFIX, write_grid
from repro.losses import DeePSiMLoss
from repro.models import Parts, build_parts, lambdas_of
from repro.optim import generator_param_groups, grads_finite, make_adam, optimizer_step, trainable
from repro.runs import RunLog

log = logging.getLogger(__name__)


class NonFiniteLoss(DeepsimError, FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the term and the last good checkpoint."""


@dataclass
class Session:
    """What a launcher gives the loop: who we are, where to report, what to resume from."""

    rank: int = 0
    world_size: int = 1
    report: Callable[[dict[str, Any], Path | None], None] = lambda metrics, ckpt: None
    resume_state: dict[str, Any] | None = None
    show_progress: bool = True
    # The progress bar's class (tqdm's signature: total, initial, desc, unit, disable, dynamic_ncols; update,
    # set_postfix, close). Under Ray the launcher gives one that draws a single bar on the driver.
    progress: Callable[..., Any] = tqdm
    checkpoint_dir: Path | None = None  # default RUN_DIR/checkpoints; under Ray a node-local folder Ray copies to storage
    # Called on the main worker with the in-memory model at each checkpoint; its metrics join the report (Tune's scorer)
    checkpoint_hook: Callable[[nn.Module], dict[str, float]] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def batch_plan(config: Config, world_size: int) -> tuple[int, int]:
    """(images per worker per step, micro-batches per step) that keep the global batch at `batch_size` on any
    number of workers: each worker takes batch_size / world_size images and, when `micro_batch` is set,
    accumulates their gradients over micro-batches of that size (the paper's 64 on 1, 2, 4, 8 … GPUs)."""
    if config.batch_size % world_size:
        raise ValueError(f"batch_size={config.batch_size} does not split evenly over {world_size} workers: choose "
                         f"a worker count that divides it (the paper's 64: 1, 2, 4, 8, 16) or another batch_size")
    per_worker = config.batch_size // world_size
    micro = config.micro_batch or per_worker
    if micro > per_worker or per_worker % micro:
        raise ValueError(f"micro_batch={config.micro_batch} must divide the {per_worker} images each of "
                         f"{world_size} worker(s) takes per step (batch_size={config.batch_size})")
    return per_worker, per_worker // micro


def loss_of(config: Config, parts: Parts) -> DeePSiMLoss:
    """The one DeePSiM loss of a run, from its config and built parts (comparator and D are shared, not copied)."""
    lambdas = lambdas_of(config)
    return DeePSiMLoss(parts.comparator, lambda_feat=lambdas["feat"], lambda_adv=lambdas["adv"],
                       lambda_img=lambdas["img"], lambda_kl=lambdas["kl"], discriminator=parts.discriminator,
                       recon=config.recon_loss, check_range=False)  # its own pipeline's images: no host sync


def to_images(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A loader batch on the device as pipeline images (B, 3, R, R) float [0, 1]: uint8 batches (pinned,
    0–255) travel as bytes and are converted on the device; float batches pass unchanged."""
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


@dataclass
class Pending:
    """A launched step whose reduced values still travel to the host (`Trainer.settle` reads them)."""

    step: int
    names: list[str]
    values: torch.Tensor  # host copy (pinned on CUDA), filled asynchronously
    ready: Any  # a CUDA event recorded after the copy, or None on CPU
    d_training: bool
    g_training: bool


class Trainer:
    """Holds the state of one run; `step()` is one iteration (`launch` + `settle`), `train()` runs the schedule.

    One iteration, in the original training script's order (KamitaniLab copy of the paper's `train.py`):
      G(y) and C(G(y)) → (1) D on real and fake, one D update with both gradients if D trains → (2) D,
      *after* its update, on the fake labelled "real" gives L_adv; G update with the comparator, adversarial and
      image gradients if G trains → the balancing rule on the raw losses (`Balance`).
    Each solver's lr schedule counts only its own updates (Caffe's `increment_iter` runs only when that net
    trains). The losses are `DeePSiMLoss` (`self.loss`), the same class a user imports.

    No host sync per step on CUDA: the step's reduced terms and flags travel to a pinned host buffer
    (`non_blocking`) and are read by `settle()` at the next step, after that step's generator forward has been
    queued — so the GPU keeps working while the host waits — and before its D phase, which is the first thing
    that needs them. The balancing rule therefore decides step t+1 from step t's ratio, exactly as the
    original does; non-finite updates are skipped on the device (`repro.optim.optimizer_step`), and reported
    (stop or skip policy) when settled, naming the step they happened in.
    """

    def __init__(self, config: Config, run_dir: Path, session: Session | None = None):
        self.config, self.run_dir = config, Path(run_dir)
        self.session = session or Session()
        self.device = pick_device(config)
        self.config = config = precision.resolve(config, self.device)  # amp/channels_last at auto: this device's path
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
        # This worker's random stream (D's dropout, the VAE's noise): seed + rank (`stream_seed`; the nets'
        # initialisation has a stream of its own, `build_parts`). The entry points (train, ray_worker, a Tune
        # trial, compare_autoencoders) set torch's thread count.
        torch.manual_seed(stream_seed(config.seed, self.session.rank, self.session.world_size))
        self.weights = provenance.weight_identity(config)
        self.per_worker, self.accumulate = batch_plan(config, self.session.world_size)
        self.parts = build_parts(config, self.device)
        self.loss = loss_of(config, self.parts)
        self.lambdas = self.loss.lambdas
        betas = (config.beta1, config.beta2)
        self.g_params = trainable(self.parts.model)
        self.opt_g = make_adam(generator_param_groups(self.parts.model, config.generator_map_decay), self.device,
                               lr=config.lr, betas=betas)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(config.lr_milestones), config.lr_gamma)
        self.g_reducer = GradReducer(self.g_params, self.session.world_size)
        self.d_params: list[nn.Parameter] = []
        self.opt_d = self.sched_d = self.d_reducer = None
        if self.parts.discriminator is not None:
            self.d_params = trainable(self.parts.discriminator)
            self.opt_d = make_adam(self.d_params, self.device, lr=config.lr, betas=betas,
                                   weight_decay=config.d_weight_decay)
            self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(config.lr_milestones), config.lr_gamma)
            self.d_reducer = GradReducer(self.d_params, self.session.world_size)
        # fp16 needs loss scaling (bf16 does not): one scaler for both phases, updated once per step
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.balance = Balance(config.pause_d_below, config.resume_d_above, config.pause_g_above)
        self.step_count = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.skipped = 0
        self.stop_agreed = False  # every worker asked to stop (time limit), as settled
        self.pending: Pending | None = None
        self.last_values: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        if self.session.resume_state is not None:
            self.load_state_dict(self.session.resume_state)
        # Every worker starts from rank 0's weights, whatever it initialised or loaded: a worker that built or
        # read something else would otherwise train another model for the whole run (gradients are averaged,
        # weights never compared). The optimiser states need no broadcast: fresh ones are zero, and a resumed run
        # loads one agreed checkpoint on every worker (`repro.cluster.resume.agreed_resume`).
        d = self.parts.discriminator
        broadcast_tensors(list(checkpoint.model_state(self.parts.model).values())
                          + (list(d.state_dict().values()) if d is not None else []), self.session.world_size)

    # ---- state --------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any] | None:
        """What a checkpoint saves: `state_dict` with every worker's random stream (`rank_rng`, by rank), so that
        each one resumes its own. Every worker must call it (the streams are gathered); the main worker gets
        the state, the others None."""
        streams = gather_object(stream_state(self.device), self.session.world_size)
        return {**self.state_dict(), "rank_rng": streams} if self.session.is_main else None

    def state_dict(self) -> dict[str, Any]:
        """What training needs to continue exactly — G, D, optimisers, schedules, balance, RNG, step — but not
        the frozen encoder/comparator (rebuilt from the registry or the user's file). The RNG is this worker's
        (`torch_rng`, `cuda_rng`); `checkpoint_state` adds every worker's."""
        self.settle()
        d, stream = self.parts.discriminator, stream_state(self.device)
        return {
            "config": self.config.to_json(),
            "weights": self.weights,  # what --resume compares: the frozen nets' sha256, not their paths
            "step": self.step_count, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "skipped": self.skipped,
            "model": checkpoint.model_state(self.parts.model),
            "discriminator": d.state_dict() if d is not None else {},
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else {},
            "sched_d": self.sched_d.state_dict() if self.sched_d else {},
            "scaler": self.scaler.state_dict(),
            "balance": self.balance.state_dict(),
            "torch_rng": stream["torch"], "cuda_rng": stream["cuda"],  # this worker's (`stream_state`)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        checkpoint.check_architecture(state, self.config)
        checkpoint.load_model_state(self.parts.model, state["model"])
        if self.parts.discriminator is not None:
            self.parts.discriminator.load_state_dict(state["discriminator"], strict=True)
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.balance.load_state_dict(state["balance"])
        self.step_count, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.skipped = int(state["batch_in_epoch"]), int(state["skipped"])
        restore_stream(state, self.config.seed, self.session.rank, self.session.world_size, self.device)

    # ---- one iteration ------------------------------------------------------------------------
    def autocast(self):
        """Autocast of the forward passes for amp="bf16"/"fp16"; losses stay fp32 (DeePSiMLoss casts)."""
        if self.config.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.config.amp == "bf16" else torch.float16)

    def step(self, real: torch.Tensor) -> dict[str, float]:
        """One iteration on a batch (B, 3, R, R) — float [0, 1] or uint8 0–255 — and its reduced values.

        Its phases are `torch.profiler` ranges (`record_function`; a few µs each when no profiler runs), read
        by bench/: "step/data" (batch to the device as float), "step/forward" (G's forward, with the encoder),
        "step/discriminator" (phase 1, `d_step`: D on real and fake, backward, D update), "step/generator"
        (phase 2, `g_step`: C(G(y)), D on the fake, the losses, backward, the all-reduce of the step's terms and
        G's update). What lies outside them (the read-back, the balancing rule) is the rest.
        """
        self.launch(real)
        return self.settle()

    def update(self, optimizer: torch.optim.Optimizer, reducer: GradReducer, params: list[nn.Parameter],
               losses: torch.Tensor, ride_along: torch.Tensor | None = None, frozen: Sequence[nn.Parameter] = (),
               trains: bool = True) -> torch.Tensor:
        """One net's update after its phase's backward, the same for D and G: wait for the gradients' all-reduce
        (`GradReducer`) → drop the gradients of `frozen` parameters → unscale them (fp16) → one all-reduce of
        this worker's `losses` (1-d), its gradients' finite flag and `ride_along` (other values that travel in
        the same collective) → step only when every reduced loss is finite and every worker's gradients were,
        decided on the device (`optimizer_step`: no host sync) → zero_grad. Returns the reduced vector
        [losses…, flag, ride_along…]. `trains` False (the balancing rule paused the net): the all-reduce alone,
        with flag 1."""
        if trains:
            reducer.wait()
            for p in frozen:
                p.grad = None  # Adam skips a parameter without gradient: moments and all
            if self.scaler.is_enabled():
                self.scaler.unscale_(optimizer)
        flag = grads_finite(params, self.device) if trains else torch.ones((), device=self.device)
        sent = [losses, flag.reshape(1)] + ([ride_along] if ride_along is not None else [])
        reduced = all_reduce_mean(torch.cat(sent), self.session.world_size)
        if trains:
            ok = torch.isfinite(reduced[:len(losses)]).all() & (reduced[len(losses)] >= 1)
            optimizer_step(optimizer, ok)
            optimizer.zero_grad(set_to_none=True)
        return reduced

    def d_step(self, chunks: list[torch.Tensor], outputs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
               conditions: list[torch.Tensor | None], trains: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(1) D on the real and the (detached) fake images of every micro-batch; one update with both
        gradients unless the balancing rule paused D. Returns L_discr (this worker's mean over the
        micro-batches) and whether every worker's D gradients were finite (1.0 or 0.0; 1.0 when D is paused)."""
        d, cfg = self.parts.discriminator, self.config
        d.train()
        d.requires_grad_(trains)
        self.d_reducer.armed = False
        d_losses = []
        for i, (chunk, (fake, _), condition) in enumerate(zip(chunks, outputs, conditions)):
            with torch.set_grad_enabled(trains), self.autocast():
                d_loss = self.loss.discriminator_loss(fake.detach(), chunk, condition)
            if trains:
                self.d_reducer.armed = i == len(chunks) - 1  # all-reduce while the last backward runs
                # ×loss_weight as Caffe's SoftmaxWithLoss: Adam ignores the scale, but not beside D's decay
                self.scaler.scale(cfg.d_loss_weight * d_loss / len(chunks)).backward()
            d_losses.append(d_loss.detach())
        discr = torch.stack(d_losses).mean()
        grads_ok = torch.ones((), device=self.device)
        if trains:
            grads_ok = self.update(self.opt_d, self.d_reducer, self.d_params, discr.float().reshape(1))[1]
        d.requires_grad_(False)
        return discr, grads_ok

    def g_step(self, chunks: list[torch.Tensor], outputs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
               conditions: list[torch.Tensor | None], trains: bool, values: dict[str, torch.Tensor],
               ride_along: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """(2) D, after its update, sees the fakes labelled "real" (L_adv); with the comparator and image terms,
        one G update unless the balancing rule paused G. D's weights get no gradient here. The step's terms
        (means over the micro-batches) join `values`, and all of `values` go into G's all-reduce with
        `ride_along`: G steps only when all of them are finite. Returns (the names of `values`, sorted; the
        reduced [values…, G's gradients finite, ride_along…])."""
        parts, loss = self.parts, self.loss
        self.g_reducer.armed = False
        sums: dict[str, torch.Tensor] = {}
        for i, (chunk, output, condition) in enumerate(zip(chunks, outputs, conditions)):
            if self.accumulate > 1:
                with torch.set_grad_enabled(trains), self.autocast():
                    output = parts.model(chunk)
            fake, aux = output
            real_features = aux["code"] if parts.shares_features else None
            with torch.set_grad_enabled(trains), self.autocast():
                terms = loss(fake, chunk, real_features=real_features, condition=condition,
                             mu=aux.get("mu"), logvar=aux.get("logvar"))
            if trains:
                self.g_reducer.armed = i == len(chunks) - 1
                self.scaler.scale(terms["total"] / len(chunks)).backward()
            for k, v in terms.items():
                sums[k] = sums[k] + v.detach() if k in sums else v.detach()
        values.update({k: v / len(chunks) for k, v in sums.items()})
        names = sorted(values)
        # a VAE/autoencoder's encoder stays as initialised for its first freeze_encoder_steps iterations
        frozen = list(parts.model.encoder.parameters()) if self.step_count < self.config.freeze_encoder_steps else []
        losses = torch.stack([values[k].float() for k in names])
        return names, self.update(self.opt_g, self.g_reducer, self.g_params, losses, ride_along, frozen, trains)

    def launch(self, real: torch.Tensor, stop: bool = False) -> None:
        """Queue one iteration (see the class docstring); `stop` is this worker's wish to end the run (time
        limit), agreed over the workers with the step's values and read back by `settle` (`stop_agreed`)."""
        cfg, parts, loss = self.config, self.parts, self.loss
        with torch.profiler.record_function("step/data"):
            real = to_images(real, self.device, cfg.channels_last)
            chunks = list(real.chunk(self.accumulate)) if self.accumulate > 1 else [real]
        parts.model.train()
        d = parts.discriminator
        # G's forward first, needing no decision: with one micro-batch its graph serves the G phase; with
        # several, the fakes for D are made without a graph and G runs again per micro-batch in its phase
        # (same weights, same images), so that only one micro-batch's graph is alive at a time.
        with torch.profiler.record_function("step/forward"):
            if self.accumulate == 1:
                with self.autocast():
                    outputs = [parts.model(real)]
            else:
                with torch.no_grad(), self.autocast():
                    outputs = [parts.model(chunk) for chunk in chunks]
        self.settle()  # the previous step's ratio decides this step (the GPU works on the forward meanwhile)
        d_training, g_training = d is not None and self.balance.d_training, self.balance.g_training
        conditions = [aux["code"].flatten(1) if (d is not None and cfg.discriminator_features) else None
                      for _, aux in outputs]
        values: dict[str, torch.Tensor] = {}
        if cfg.lambda_img_start:  # the optional λ_img schedule, counted on the checkpointed iteration
            loss.lambdas["img"] = lambda_img_at(cfg, self.step_count)
            values["lambda_img"] = torch.tensor(loss.lambdas["img"], device=self.device)
        with torch.profiler.record_function("step/discriminator"):  # (1) update D
            d_grads_ok = torch.ones((), device=self.device)
            if d is not None:
                values["discr"], d_grads_ok = self.d_step(chunks, outputs, conditions, d_training)
        with torch.profiler.record_function("step/generator"):  # (2) update G
            # D's gradient flag and the stop wish of every worker travel in G's all-reduce of the step's terms
            ride_along = torch.stack([d_grads_ok, torch.full((), float(stop), device=self.device)])
            names, checks = self.g_step(chunks, outputs, conditions, g_training, values, ride_along)
        if self.scaler.is_enabled() and (d_training or g_training):
            self.scaler.update()
        if self.device.type == "cuda":
            host = torch.empty(checks.shape, dtype=checks.dtype, pin_memory=True)
            host.copy_(checks, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host, ready = checks, None
        self.pending = Pending(self.step_count, names, host, ready, d_training, g_training)

    def settle(self) -> dict[str, float]:
        """Read the launched step's reduced values (waiting for them if needed) and act on them: non-finite
        policy, lr schedules of the nets that were updated, the balancing rule. Returns those values (the last
        settled ones when nothing is pending)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return dict(self.last_values)
        if pending.ready is not None:
            pending.ready.synchronize()
        *terms, finite_g, finite_d, stop = pending.values.tolist()
        reduced = dict(zip(pending.names, terms))
        self.stop_agreed = self.stop_agreed or stop > 0
        bad = [k for k, v in reduced.items() if not math.isfinite(v)]
        d_updated = pending.d_training and math.isfinite(reduced["discr"]) and finite_d >= 1
        g_updated = pending.g_training and not bad and finite_g >= 1
        if self.scaler.is_enabled():
            # fp16: an overflow of the scaled gradients is GradScaler's business, not a fault — the update was
            # skipped on the device and the scale lowered; it is logged, and only non-finite losses count
            if (pending.g_training and finite_g < 1) or (pending.d_training and finite_d < 1):
                reduced["grad_overflow"] = 1.0
        else:
            if pending.g_training and finite_g < 1:
                bad.append("generator gradients")
            if pending.d_training and finite_d < 1:
                bad.append("discriminator gradients")
        # Each solver's schedule counts its own updates, as Caffe's (`increment_iter` only when that net trains);
        # an update skipped as non-finite did not happen.
        if d_updated:
            self.sched_d.step()
        if g_updated:
            self.sched_g.step()
        if bad:
            # the update(s) of that step were skipped on the device (`optimizer_step`)
            where = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
            message = f"non-finite {', '.join(bad)} at step {pending.step} ({where})"
            if self.config.nonfinite == "stop":
                raise NonFiniteLoss(message)
            log.warning("%s; skipping this update", message)
            self.skipped += 1
            reduced["skipped"] = 1.0
            self.last_values = reduced
            return dict(reduced)
        if self.parts.discriminator is not None:
            ratio = reduced["discr"] / max(reduced["adv"], 1e-12) if "adv" in reduced else float("inf")
            reduced["ratio"] = ratio
            for event in self.balance.update(ratio, pending.step).events:
                log.info(event)
                if self.session.is_main:
                    tqdm.write(event)
            reduced["d_paused_steps"] = float(self.balance.d_paused_steps)
        reduced["d_training"] = float(pending.d_training)
        reduced["g_training"] = float(pending.g_training)
        reduced["lr"] = self.opt_g.param_groups[0]["lr"]
        self.last_values = reduced
        return dict(reduced)

    # ---- evaluation grid ----------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        self.parts.model.eval()
        images = to_images(images, self.device, self.config.channels_last)
        out = self.parts.model(images)[0]
        self.parts.model.train()
        return out.float().cpu()


def train(config: Config, run_dir: Path, session: Session | None = None) -> dict[str, Any]:
    """Run (or continue) the schedule of `config`; returns a summary. The same function runs in-process
    (`--launcher local`) and inside every Ray Train worker."""
    session = session or Session()
    run_dir = Path(run_dir)
    trainer = Trainer(config, run_dir, session)
    resolve_folder(config.train_data, config.verify_data and session.is_main)  # a shared folder's sha256
    # uint8 batches of this rank's shard (pinned on CUDA); the step converts them to float on the device
    loader = training_loader(config, session.rank, session.world_size, trainer.device)
    eval_files = list_images(resolve_folder(config.eval_data, False))[: config.eval_images]
    eval_images = load_images(eval_files, config.resolution)
    runlog = RunLog(run_dir, session.is_main)
    batches = infinite_batches(loader, start_epoch=trainer.epoch, skip=trainer.batch_in_epoch)
    progress = session.progress(total=config.steps, initial=trainer.step_count, desc=config.preset, unit="step",
                                disable=not (session.is_main and session.show_progress), dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    deadline = time.monotonic() + 60 * config.time_limit_min if config.time_limit_min > 0 else math.inf
    values: dict[str, float] = {}
    try:
        while trainer.step_count < config.steps:
            epoch, batch_in_epoch, real = next(batches)
            # Every worker must agree to stop at the same step (time limits differ by clock skew): each one's
            # wish travels in the step's own all-reduce, on the device, and is read back (`stop_agreed`) when
            # the step settles — at the next step, or now on a step that is logged, drawn or checkpointed.
            trainer.launch(real, stop=time.monotonic() > deadline)
            trainer.step_count += 1
            trainer.epoch, trainer.batch_in_epoch = epoch, batch_in_epoch + 1
            window_images += real.shape[0] * session.world_size
            step = trainer.step_count
            if step % config.log_every == 0 or step % config.image_every == 0 or step % config.checkpoint_every == 0:
                trainer.settle()  # values of this very step (a host sync only on these steps)
            out_of_time = trainer.stop_agreed
            last = step == config.steps or out_of_time
            values = trainer.settle() if last else dict(trainer.last_values)
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
                write_grid(run_dir / "grids" / f"step-{step:08d}{FIGURE_SUFFIX}", eval_images, recon)
                write_grid(run_dir / f"grid-latest{FIGURE_SUFFIX}", eval_images, recon)
            ckpt_dir = None
            if step % config.checkpoint_every == 0 or last:
                state = trainer.checkpoint_state()  # every worker: each one's random stream is gathered
                if session.is_main:
                    ckpt_dir = checkpoint.save(session.checkpoint_dir or run_dir / "checkpoints", step,
                                               state, keep=config.keep_checkpoints)
                    trainer.last_checkpoint = ckpt_dir
                scores = session.checkpoint_hook(trainer.parts.model) if session.checkpoint_hook and session.is_main else {}
                session.report({"step": step, **values, **scores}, ckpt_dir)
            if out_of_time:
                tqdm.write(f"time limit of {config.time_limit_min} min reached at step {step}")
                break
    finally:
        progress.close()
        runlog.close()
    return {"step": trainer.step_count, "skipped": trainer.skipped, "last": values,
            "balance_events": trainer.balance.history, "checkpoint": str(trainer.last_checkpoint)}
