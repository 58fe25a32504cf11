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
from repro.errors import cli
from repro.generator_file import load_generator
from repro.losses import feature_loss, image_loss
from repro.models import Inverter, init_generator_path


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.term_balance", description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="shipped", help="a generator file, or 'shipped' (default)")
    parser.add_argument("--n", type=int, default=16, help="evaluation images (the first n of imagenet-1k-256)")
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON, with provenance")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(0)
    path = init_generator_path(args.generator)
    loaded = load_generator(path)
    config = make_config("conv5star")
    inverter = Inverter.from_generator_file(loaded) if hasattr(Inverter, "from_generator_file") else loaded.inverter()
    images = load_images(list_images(asset_folder("imagenet-1k-256", verify=False))[: args.n], loaded.resolution)
    comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                  input_size=config.comparator_resolution)
    with torch.no_grad():
        real_features = comparator(images)
        fake = inverter.generator(inverter.encode(images))
    fake.requires_grad_(True)
    fake_features = comparator(fake)
    feat, img = feature_loss(fake_features, real_features), image_loss(fake, images)
    grad_feat, = torch.autograd.grad(feat, fake, retain_graph=True)
    grad_img, = torch.autograd.grad(img, fake)
    n = len(images)
    out = {
        "generator": f"{path} sha256={loaded.sha256}", "n_images": n,
        "feature_term": float(feat.detach()), "image_term": float(img.detach()),
        "feature_term_of_a_zero_output": float(real_features.pow(2).sum() / (2 * n)),
        "reconstructions_half_squared_norm": float(fake_features.detach().pow(2).sum() / (2 * n)),
        "feature_term_between_shuffled_originals": float(feature_loss(real_features, real_features.roll(1, 0))),
        "image_gradient_norm_at_lambda_img": float(config.lambda_img * grad_img.norm()),
        "feature_gradient_norm": {str(lam): float(lam * grad_feat.norm())
                                  for lam in (config.lambda_feat, round(100 * config.lambda_feat, 5))},
    }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = provenance.record(provenance.command("bench.term_balance", argv), dev="cpu", started=started)
        args.out.write_text(json.dumps({**out, "provenance": record}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
