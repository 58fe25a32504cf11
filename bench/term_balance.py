"""`python -m bench.term_balance [--generator FILE] [--n 16] [--out FILE.json]`: how the DeePSiM terms pull on a
generator's output, measured at a trained generator (default: the shipped CONV5* image-loss one).

Why: under protocol CONV5* the feature term never fell at the λ rule's λ_feat (results/conv5star). This
measures, on the first n evaluation images, the feature and image terms (Caffe units, `repro.losses`), what a
reconstruction with no comparator activity would score (½‖C(x)‖²/N), the reconstructions' own ½‖C(G(y))‖²/N,
and the norm of each term's λ-weighted gradient on G's output, for the rule's λ_feat and 100× it
(results/conv5star-warm/lambda-probe/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from repro import provenance
from repro.assets import asset_folder
from repro.comparators import build_comparator
from repro.config import make_config
from repro.data import list_images, load_images
from repro.errors import cli, user_input
from repro.generator_file import init_generator_path, load_generator
from repro.losses import adversarial_loss, feature_loss, image_loss
from repro.models import Inverter
from repro.runs import load_run


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.term_balance", description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="shipped", help="a generator file, or 'shipped' (default)")
    parser.add_argument("--n", type=int, default=16, help="evaluation images (the first n of imagenet-1k-256)")
    parser.add_argument("--run", type=Path, help="instead: a run folder, whose G and D (at --step) are measured, "
                        "the adversarial term's gradient too")
    parser.add_argument("--step", type=int, help="the run's checkpoint (default: its newest)")
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON, with provenance")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(0)
    config, discriminator = make_config("conv5star"), None
    if args.run:
        with user_input(FileNotFoundError, ValueError):  # not a run folder; CheckpointError: a user error already
            run = load_run(args.run, device="cpu", step=args.step)
        config, inverter, discriminator = run.config, run.parts.model, run.parts.discriminator
        source, resolution = f"{args.run} step {run.step}", config.resolution
    else:
        with user_input(FileNotFoundError, ValueError):  # no such generator file, or not one
            path = init_generator_path(args.generator)
            loaded = load_generator(path)
        inverter = Inverter.from_file(loaded)
        source, resolution = f"{path} sha256={loaded.sha256}", loaded.resolution
    inverter.eval()
    images = load_images(list_images(asset_folder("imagenet-1k-256", verify=False))[: args.n], resolution)
    comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                  input_size=config.comparator_resolution)
    with torch.no_grad():
        real_features = comparator(images)
        code = inverter.encode(images)
    params = [p for p in inverter.generator.parameters()]
    for p in params:
        p.requires_grad_(True)
    fake = inverter.generator(code)
    fake_features = comparator(fake)
    terms = {"feat": feature_loss(fake_features, real_features), "img": image_loss(fake, images)}
    if discriminator is not None:
        discriminator.eval()  # no dropout: one deterministic reading
        terms["adv"] = adversarial_loss(discriminator(fake))
    n, rule = len(images), make_config("conv5star").lambda_feat
    lambdas = {"feat": sorted({config.lambda_feat, rule, round(100 * rule, 5)}), "img": [config.lambda_img],
               "adv": [config.lambda_adv]}
    on_output, on_params = {}, {}
    for name, term in terms.items():  # each term's gradient on G's output and on G's parameters, at λ = 1
        grads = torch.autograd.grad(term, [fake, *params], retain_graph=True, allow_unused=True)
        on_output[name] = grads[0]
        on_params[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                     for g, p in zip(grads[1:], params)])
    cosine = {f"{a}·{b}": float(torch.nn.functional.cosine_similarity(on_params[a], on_params[b], dim=0))
              for a, b in (("feat", "img"), ("feat", "adv"), ("img", "adv")) if a in terms and b in terms}
    out = {
        "generator": source, "n_images": n, "terms": {k: float(v.detach()) for k, v in terms.items()},
        "feature_term_of_a_zero_output": float(real_features.pow(2).sum() / (2 * n)),
        "reconstructions_half_squared_norm": float(fake_features.detach().pow(2).sum() / (2 * n)),
        "feature_term_between_shuffled_originals": float(feature_loss(real_features, real_features.roll(1, 0))),
        "gradient_norms": {f"{name} (λ {lam})": {"on_output": float(lam * on_output[name].norm()),
                                                 "on_generator_parameters": float(lam * on_params[name].norm())}
                           for name in terms for lam in lambdas[name]},
        "cosine_of_parameter_gradients": cosine,
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = provenance.record(provenance.command("bench.term_balance", argv), dev="cpu", started=started)
        args.out.write_text(json.dumps({**out, "provenance": record}, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
