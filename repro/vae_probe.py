"""`python -m repro.vae_probe`: what the first iterations of a DeePSiM VAE do to its encoder.

The `vae` preset's runs collapsed (results/autoencoders/20261204-cpu/vae-long.json) — also with λ_KL ramped
up from 0, and also after the encoder had been held still while the decoder learnt to invert its code. This
probe separates the two suspects, the balance of terms (λ_KL) and the optimiser, by following the encoder
over the first iterations on fixed evaluation images, per λ_KL and with or without the pretrained trunk
being fine-tuned:
- `pool5_alive`: fraction of the trunk's pool5 activations > 0 (ReLU output), `pool5_spread`: their standard
  deviation over images, mean over units: 0 = the trunk says the same thing for every image;
- `mu_spread`: μ's standard deviation over images, mean over latent units; `logvar`: mean log σ².
Each (λ_KL, trunk) pair trains from the same seed on the same batches through the one training loop.

It also prices the information a DeePSiM VAE can afford (`kl_budget`): the reconstruction terms
(λ_feat·L_feat + λ_img·L_img) of a blind reconstruction — the mean image, or another real image — divided by
λ_KL is the most KL, in nats per image, that perfect reconstructions could pay for. The reduced-scale rule
keeps it (the paper's λ at 227 px and the rule's at 64 px), so it tells what the paper's balance allows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from repro import provenance
from repro.assets import asset_folder
from repro.config import Config, make_config
from repro.lambda_rule import reduced_lambdas
from repro.errors import cli, user_input
from repro.data import infinite_batches, list_images, load_images, training_loader
from repro.loop import Trainer
from repro.losses import DeePSiMLoss
from repro.evaluation.scores import load_eval_images


def encoder_state(encoder: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """The numbers above for one GaussianEncoder on pipeline images (n, 3, R, R)."""
    with torch.no_grad():
        pool5 = encoder.features(images)
        mu, logvar = encoder.heads(pool5)
    return {"pool5_alive": float((pool5 > 0).float().mean()), "pool5_spread": float(pool5.std(0).mean()),
            "mu_spread": float(mu.std(0).mean()), "logvar": float(logvar.mean())}


def kl_budget(resolution: int, n_images: int = 128) -> dict[str, float]:
    """Nats per image that the reconstruction cost of a blind reconstruction is worth at `resolution`, with
    the λ of the reduced-scale rule (repro.lambda_rule.reduced_lambdas: the paper's at 227 px), the cost being the
    training loss's own DeePSiM terms without D."""
    lam = reduced_lambdas(resolution)
    images = load_images(list_images(asset_folder("imagenet-1k-256"))[:n_images], resolution)
    loss = DeePSiMLoss("alexnet", "pool5", resolution=resolution, lambda_feat=lam["lambda_feat"], lambda_adv=0.0,
                       lambda_img=Config.lambda_img)
    out = {"resolution": resolution, "lambda_feat": lam["lambda_feat"], "lambda_img": Config.lambda_img,
           "lambda_kl": lam["lambda_kl"], "n_images": n_images}
    with torch.no_grad():
        real = loss.comparator_features(images)
        for name, blind in (("mean_image", images.mean(0, keepdim=True).expand_as(images)),
                            ("other_image", images.roll(1, 0))):
            cost = float(loss(blind, images, real_features=real)["total"])
            out[f"{name}_cost"] = cost
            out[f"{name}_nats"] = cost / lam["lambda_kl"]
    return out


def probe(preset: str, lambda_kl: float, fine_tune_trunk: bool, steps: int, every: int, n_images: int,
          overrides: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Encoder states at iterations 0, every, 2·every, … steps of one fresh VAE run (no files kept)."""
    config = make_config(preset, {**(overrides or {}), "lambda_kl": lambda_kl, "fine_tune_trunk": fine_tune_trunk,
                                  "steps": steps})
    if config.model != "vae":
        raise ValueError(f"preset {preset!r} is model={config.model}, not a VAE")
    probe_images = load_eval_images(config, n_images)[0]
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Path(run_dir))
        batches = infinite_batches(training_loader(config))
        states = []
        for step in range(steps + 1):
            if step % every == 0:
                states.append({"step": step, **encoder_state(trainer.parts.model.encoder, probe_images)})
            if step < steps:
                trainer.step(next(batches)[2])
                trainer.step_count += 1
        trainer.settle()
    return states


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.vae_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vae")
    parser.add_argument("--lambda-kl", type=float, nargs="+", default=[0.0, 0.01, 1.59])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--n", type=int, default=64, help="evaluation images the encoder is probed on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the records here (JSON, with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started, records = time.time(), []
    for lam in args.lambda_kl:
        for trunk in (True, False):
            with user_input(ValueError):  # ConfigError: a user error already
                states = probe(args.preset, lam, trunk, args.steps, args.every, args.n)
            records.append({"lambda_kl": lam, "fine_tune_trunk": trunk, "states": states})
            last = states[-1]
            print(f"λ_KL {lam:g}, trunk {'fine-tuned' if trunk else 'held'}: after {last['step']} iterations "
                  f"pool5 alive {100 * last['pool5_alive']:.1f} % (from {100 * states[0]['pool5_alive']:.1f} %), "
                  f"μ spread {last['mu_spread']:.3f} (from {states[0]['mu_spread']:.3f})", flush=True)
    budgets = [kl_budget(r) for r in (227, 64)]
    for b in budgets:
        print(f"{b['resolution']} px, λ_KL {b['lambda_kl']:g}: a blind reconstruction's cost is worth "
              f"{b['mean_image_nats']:.1f} nats (mean image), {b['other_image_nats']:.1f} (another image)")
    if args.out:
        cmd = provenance.command("repro.vae_probe", sys.argv[1:] if argv is None else argv)
        provenance.write(args.out.parent, provenance.record(cmd, dev="cpu", started=started, preset=args.preset,
                                                            records=records, kl_budget=budgets), args.out.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
