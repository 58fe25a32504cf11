"""`python -m repro.synthesize --classifier squeezenet --unit N --generator FILE`: images a classifier unit prefers,
found through a generator (activation maximisation with a learned prior, Nguyen et al. 2016, "Synthesizing
the preferred inputs for neurons in neural networks via deep generator networks").

Instead of optimising pixels, optimise the generator's input code y so that unit k of the classifier fires
on the image G(y): the generator keeps the image on its manifold of natural-looking images.

What is taken from Nguyen et al. (paper §2 and their released act_max.py / 1_activate_output.sh, the
settings they used for CaffeNet):
- the objective: the unit's activation before softmax (fc8 of CaffeNet; here: the tap given, by default
  the class scores), on the centre crop of G's output (a released generator file crops 256 → 227 itself);
- the step: y ← y + lr · g / mean|g|, g = ∂a_k/∂y (their two chained steps — image step normalised by its
  mean |·|, then the code step normalised by its own — give exactly this direction and size, because the
  back-propagation through G is linear in the image step);
- lr decays linearly from 8 to 1e-10 over 200 iterations; start code y ~ N(0, I) from the seed;
- after each step the code is clipped per unit to [lower, upper] and then multiplied by 0.99 (their
  "L2" weight: a decay towards 0, not a penalty term); upper = 3 × the largest value each code unit takes
  on real images (their act_range/3x files), lower = 0 for post-ReLU codes (as theirs).
What is ours: the bounds come from the encoder the generator file names, run on `--bound-images` (default:
64 images of the evaluation set) — their act_range files were computed the same way on ImageNet; codes that
take negative values (not theirs) get lower = 3 × the smallest value. All units (× `--samples` seeds) are
optimised as one batch; each code's step is normalised by its own gradient, so they do not interact.

Writes DIR/unit-<k>.png (the samples of one unit side by side), DIR/grid.png (one row per unit) and
DIR/synthesize.json (settings, the unit's activation at the start and the end, and whether it ends as the
classifier's top unit), and prints one line per unit.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from repro.errors import UsageError, cli, user_input
from repro.invert import OneLineParser


@dataclass(frozen=True)
class Settings:
    """Nguyen et al.'s settings for CaffeNet fc8 (1_activate_output.sh)."""

    steps: int = 200          # iterations
    lr: float = 8.0           # step size at the first iteration …
    end_lr: float = 1e-10     # … decaying linearly to this
    decay: float = 0.99       # code ← decay · code after each step ("L2" in act_max.py)
    bound_multiplier: float = 3.0  # upper bound = this × the largest value each code unit takes on real images
    seed: int = 0             # start codes ~ N(0, I) from a torch.Generator with this seed


class Objective(nn.Module):
    """Image (B, 3, R, R) pipeline RGB → the classifier's tap, resized to the classifier's input side."""

    def __init__(self, net: nn.Module, tap: str, resolution: int | None):
        super().__init__()
        from repro.nets.caffenet import require_tap

        require_tap(net, tap, "this classifier")  # unknown, or without trained weights (the shipped AlexNet's fc6–fc8)
        self.net, self.tap, self.resolution = net.eval(), tap, resolution
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.resolution and images.shape[-1] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self.net(self.net.transform(images), tap=self.tap)


def unit_activations(outputs: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """a_k per row: outputs (B, C) or (B, C, H, W) (then the unit at the centre, as act_max.py's xy for conv layers)."""
    if outputs.dim() == 4:
        outputs = outputs[:, :, outputs.shape[2] // 2, outputs.shape[3] // 2]
    return outputs.flatten(1).gather(1, units.view(-1, 1)).squeeze(1)


def code_bounds(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, multiplier: float,
                batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) per code unit: multiplier × the smallest (only if < 0) and largest value on `images`."""
    with torch.no_grad():
        codes = torch.cat([encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return codes.min(0).values.clamp(max=0) * multiplier, codes.max(0).values * multiplier


def synthesize(generator: nn.Module, objective: nn.Module, units: list[int], settings: Settings = Settings(),
               samples: int = 1, bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
               progress: bool = True) -> dict[str, torch.Tensor]:
    """Optimise one code per (unit, sample) so that the unit fires; see the module docstring for the rule.

    Returns {"images": (U·S, 3, R, R) pipeline RGB clamped to [0, 1], "codes", "start": a_k at the N(0, I) start
    code (before any clipping),
    "end": a_k at the final code, "top": the classifier's arg-max unit at the final code}, on the CPU.
    """
    in_shape = tuple(generator.in_shape)
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(settings.seed)  # the caller's global RNG is left alone
    code = torch.randn((len(units) * samples, *in_shape), generator=rng).to(device)
    target = torch.tensor([u for u in units for _ in range(samples)], device=device)
    lower, upper = (b.to(device) for b in bounds) if bounds is not None else (None, None)
    generator.eval()

    def activations(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = objective(generator(c))
        return unit_activations(outputs, target), outputs

    with torch.no_grad():
        start = activations(code)[0].cpu()
    bar = tqdm(range(settings.steps), desc=f"synthesize {len(units)} unit(s)", unit="step", disable=not progress)
    for i in bar:
        lr = settings.lr + (settings.end_lr - settings.lr) * i / settings.steps
        code.requires_grad_(True)
        act = activations(code)[0]
        (grad,) = torch.autograd.grad(act.sum(), code)  # rows are independent: each gets ∂a_k/∂y of its own
        with torch.no_grad():
            scale = grad.abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, *[1] * len(in_shape))
            code = code.detach() + lr * grad / scale
            if lower is not None:
                code = torch.maximum(torch.minimum(code, upper), lower)
            if 0 < settings.decay < 1:
                code = code * settings.decay
        if i % 10 == 0 or i == settings.steps - 1:
            bar.set_postfix(act=f"{act.mean().item():.3g}")
    with torch.no_grad():
        end, outputs = activations(code)
        images = generator(code)
        scores = outputs if outputs.dim() == 2 else outputs[:, :, outputs.shape[2] // 2, outputs.shape[3] // 2]
    return {"images": images.clamp(0, 1).cpu(), "codes": code.cpu(), "start": start, "end": end.cpu(),
            "top": scores.flatten(1).argmax(1).cpu()}


DEFAULT_TAPS = {"squeezenet": "pool_final", "caffenet": "fc8", "caffenet-random": "fc8", "alexnet-random": "fc8"}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m repro.synthesize", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--generator", required=True, type=Path, help="a generator file (repro.generator_file)")
    parser.add_argument("--classifier", default="squeezenet", help="registry name (repro.comparators), e.g. squeezenet, caffenet")
    parser.add_argument("--classifier-weights", help="weights file for caffenet/onnx classifiers (your bvlc_reference_caffenet.caffemodel)")
    parser.add_argument("--tap", help="the layer whose unit is maximised (default: squeezenet pool_final, caffenet fc8)")
    parser.add_argument("--unit", type=int, action="append", required=True, help="unit index (repeatable)")
    parser.add_argument("--samples", type=int, default=1, help="start codes (seeds) per unit")
    parser.add_argument("--classifier-resolution", type=int,
                        help="input side of the classifier (default: 227 for caffenet, else the generator's)")
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--lr", type=float, default=Settings.lr)
    parser.add_argument("--end-lr", type=float, default=Settings.end_lr)
    parser.add_argument("--decay", type=float, default=Settings.decay)
    parser.add_argument("--bound-multiplier", type=float, default=Settings.bound_multiplier)
    parser.add_argument("--bound-images", help="images whose codes set the clipping bounds (default: 64 of eval data)")
    parser.add_argument("--no-bounds", action="store_true", help="no clipping (only the decay)")
    parser.add_argument("--encoder-weights", help="the generator's encoder weights, if it needs a file (caffenet); "
                                                  "default: --classifier-weights when both are caffenet")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--out", type=Path, default=Path("synthesized"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.samples < 1:
        parser.error("--steps and --samples must be ≥ 1")
    settings = Settings(args.steps, args.lr, args.end_lr, args.decay, args.bound_multiplier, args.seed)
    t0 = time.time()
    from repro.comparators import build_net
    from repro.config import USER_WEIGHTS
    from repro.data import list_images, load_images
    from repro.devices import user_device
    from repro.generator_file import load_generator

    user_device(args.device)
    if args.classifier in USER_WEIGHTS and not args.classifier_weights:
        raise UsageError(f"--classifier {args.classifier} needs your {USER_WEIGHTS[args.classifier]}: pass "
                         "--classifier-weights FILE")
    with user_input(ValueError, OSError, RuntimeError):
        loaded = load_generator(args.generator, args.device)
        tap = args.tap or DEFAULT_TAPS.get(args.classifier)
        if tap is None:
            raise ValueError(f"classifier {args.classifier!r} has no default tap; pass --tap")
        side = args.classifier_resolution or (227 if args.classifier.startswith("caffenet") else loaded.resolution)
        net = build_net(args.classifier, resolution=side, weights=args.classifier_weights).to(args.device)
        objective = Objective(net, tap, side)
        with torch.no_grad():
            channels = objective(torch.zeros(1, 3, loaded.resolution, loaded.resolution, device=args.device)).shape[1]
        bad = [u for u in args.unit if not 0 <= u < channels]
        if bad:
            raise ValueError(f"unit(s) {bad} out of range: {args.classifier}:{tap} has {channels} units (0–{channels - 1})")
        bounds = None
        if not args.no_bounds:
            encoder_weights = args.encoder_weights or (
                args.classifier_weights if loaded.encoder == args.classifier else None)
            try:
                inverter = loaded.inverter(encoder_weights, args.device)
            except ValueError as err:
                if "needs the original weights" not in str(err):
                    raise
                raise ValueError(f"the code bounds come from the generator's encoder {loaded.encoder}:{loaded.tap}, "
                                 "whose weights are yours to bring: pass --encoder-weights FILE, or --no-bounds") from None
            from repro.assets import asset_folder

            eval_data = loaded.config.get("eval_data") or "imagenet-1k-256"
            folder = args.bound_images or (eval_data if Path(eval_data).is_dir() else
                                           asset_folder("imagenet-1k-256", verify=False))
            files = list_images(folder)[:64]
            bounds = code_bounds(inverter.encode, load_images(files, loaded.resolution).to(args.device),
                                 settings.bound_multiplier)
    result = synthesize(loaded.generator, objective, args.unit, settings, args.samples, bounds)
    args.out.mkdir(parents=True, exist_ok=True)
    from torchvision.utils import save_image

    rows = result["images"].view(len(args.unit), args.samples, *result["images"].shape[1:])
    for unit, row in zip(args.unit, rows):
        save_image(row, args.out / f"unit-{unit}.png", nrow=args.samples, padding=2, pad_value=1.0)
    save_image(result["images"], args.out / "grid.png", nrow=args.samples, padding=2, pad_value=1.0)
    per_unit = []
    for j, unit in enumerate(args.unit):
        rows_of = slice(j * args.samples, (j + 1) * args.samples)
        record = {"unit": unit, "start": result["start"][rows_of].tolist(), "end": result["end"][rows_of].tolist(),
                  "top_is_unit": (result["top"][rows_of] == unit).tolist()}
        per_unit.append(record)
        print(f"unit {unit}: activation {sum(record['start']) / args.samples:.3g} → {sum(record['end']) / args.samples:.3g}, "
              f"top unit in {sum(record['top_is_unit'])}/{args.samples} → {args.out / f'unit-{unit}.png'}")
    record = {"command": "python -m repro.synthesize " + " ".join(sys.argv[1:] if argv is None else argv),
              "generator": str(args.generator), "generator_sha256": loaded.sha256, "encoder": f"{loaded.encoder}:{loaded.tap}",
              "classifier": args.classifier, "tap": tap, "classifier_resolution": side, "settings": asdict(settings),
              "bounds": None if bounds is None else {"images": str(folder), "count": len(files)},
              "units": per_unit, "wall_s": round(time.time() - t0, 1), "device": str(args.device)}
    (args.out / "synthesize.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
