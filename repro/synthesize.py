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

**Code search** (`--scorer` or `--optimizer`): one scorer, any optimiser of `repro.code_search`, a budget of
images scored, a resumable run folder:

    python -m repro.synthesize --optimizer genetic --scorer squeezenet:945 --generator FILE --budget 1000 --out DIR
    python -m repro.synthesize --optimizer cmaes --scorer mymodule:score --generator FILE --budget 1000 --out DIR
    python -m repro.synthesize --optimizer genetic --scorer files:EXCHANGE --generator FILE --budget 400 --out DIR
    python -m repro.synthesize --resume DIR      # after a crash or a scorer's failure: from its last generation

Scorers are `repro.scorers` specs (a network unit NET[:TAP]:UNIT with `--classifier-weights`/
`--classifier-resolution`, a Python function module:function, a file exchange files:DIR); without `--scorer`,
`--classifier/--tap/--unit` name the unit. The budget is divided into generations of `--population` images
(genetic 20, cmaes cma's default, gradient `--samples`); gradient ascent takes one step per generation, its lr
schedule spread over them, and keeps the code bounds above. DIR holds `search.json` (the command, commit,
generator sha256, scorer, settings, device, wall time, best score), and the run folder of
`repro.code_search.search` (stats.jsonl, TensorBoard, best-per-generation.png, best.pt/best.png, state.pt).
A bad scorer, a scorer that answers wrongly (count, NaN, ids, no scores file in time) or a budget below one
generation end with one line `error: …` and exit status 2; a failure mid-run keeps every finished generation.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from repro import provenance
from repro.assets import asset_folder
from repro.code_search import (CMAES, CMASettings, GeneticSettings, Genetic, GradientAscent, Settings, load_state, search,
                               settings_record)
from repro.comparators import build_net
from repro.data import list_images, load_images
from repro.errors import UsageError, cli, user_input
from repro.generator_file import load_generator
from repro.invert import OneLineParser
from repro.models import Inverter
from repro.scorers import DEFAULT_TAPS, FileExchangeScorer, Objective, ScorerError, scorer_from_spec, unit_activations


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
    device = next(generator.parameters()).device
    ascent = GradientAscent(generator.in_shape, settings, len(units) * samples, bounds, device)
    target = torch.tensor([u for u in units for _ in range(samples)], device=device)
    generator.eval()

    def activations(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = objective(generator(c))
        return unit_activations(outputs, target), outputs

    with torch.no_grad():
        start = activations(ascent.code)[0].cpu()
    bar = tqdm(range(settings.steps), desc=f"synthesize {len(units)} unit(s)", unit="step", disable=not progress)
    for i in bar:
        act = activations(ascent.ask())[0]
        ascent.tell(act)
        if i % 10 == 0 or i == settings.steps - 1:
            bar.set_postfix(act=f"{act.mean().item():.3g}")
    code = ascent.code
    with torch.no_grad():
        end, outputs = activations(code)
        images = generator(code)
        scores = outputs if outputs.dim() == 2 else outputs[:, :, outputs.shape[2] // 2, outputs.shape[3] // 2]
    return {"images": images.clamp(0, 1).cpu(), "codes": code.cpu(), "start": start, "end": end.cpu(),
            "top": scores.flatten(1).argmax(1).cpu()}


def bounds_from_encoder(loaded, encoder_weights: str | None, bound_images: str | None, multiplier: float,
                        device: str) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """Code bounds from the generator's own encoder on 64 real images; and where they came from."""
    try:
        inverter = Inverter.from_file(loaded, encoder_weights, device)
    except ValueError as err:
        if "needs the original weights" not in str(err):
            raise
        raise ValueError(f"the code bounds come from the generator's encoder {loaded.encoder}:{loaded.tap}, "
                         "whose weights are yours to bring: pass --encoder-weights FILE, or --no-bounds") from None
    eval_data = loaded.config.get("eval_data") or "imagenet-1k-256"
    folder = bound_images or (eval_data if Path(eval_data).is_dir() else asset_folder("imagenet-1k-256", verify=False))
    files = list_images(folder)[:64]
    bounds = code_bounds(inverter.encode, load_images(files, loaded.resolution).to(device), multiplier)
    return bounds, {"images": str(folder), "count": len(files)}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m repro.synthesize", description=__doc__.split("\n")[0])
    parser.add_argument("--generator", type=Path, help="a generator file (repro.generator_file)")
    parser.add_argument("--classifier", default="squeezenet", help="registry name (repro.comparators), e.g. squeezenet, caffenet")
    parser.add_argument("--classifier-weights", help="weights file for caffenet/onnx classifiers (your bvlc_reference_caffenet.caffemodel)")
    parser.add_argument("--tap", help="the layer whose unit is maximised (default: squeezenet pool_final, caffenet fc8)")
    parser.add_argument("--unit", type=int, action="append", help="unit index (repeatable; a search takes one)")
    parser.add_argument("--samples", type=int, default=1, help="start codes (seeds) per unit")
    parser.add_argument("--classifier-resolution", type=int,
                        help="input side of the classifier (default: 227 for caffenet, else the generator's)")
    parser.add_argument("--steps", type=int, help=f"gradient steps without a search (default {Settings.steps}); "
                                                  "a search takes --budget")
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
    search = parser.add_argument_group("code search (repro.code_search)")
    search.add_argument("--optimizer", choices=("gradient", "genetic", "cmaes"), help="search the codes (default "
                        "genetic when --scorer is given)")
    search.add_argument("--scorer", help="NET[:TAP]:UNIT | module:function | files:DIR (repro.scorers)")
    search.add_argument("--budget", type=int, help="images to score in all")
    search.add_argument("--population", type=int, help="codes per generation (default: genetic 20, cmaes 4+⌊3 ln n⌋, "
                                                       "gradient --samples)")
    search.add_argument("--mutation-rate", type=float, default=GeneticSettings.mutation_rate)
    search.add_argument("--mutation-size", type=float, default=GeneticSettings.mutation_size)
    search.add_argument("--selectivity", type=float, default=GeneticSettings.selectivity)
    search.add_argument("--heritability", type=float, default=GeneticSettings.heritability)
    search.add_argument("--keep", type=int, default=GeneticSettings.keep, help="best codes kept unchanged (genetic)")
    search.add_argument("--sigma0", type=float, default=CMASettings.sigma0, help="initial step size (cmaes)")
    search.add_argument("--cma-diagonal", choices=("auto", "yes", "no"), default="auto",
                        help="diagonal covariance (cmaes; auto: above 4096 code dimensions)")
    search.add_argument("--exchange-timeout", type=float, default=600.0,
                        help="seconds to wait for each scores file (files:DIR)")
    search.add_argument("--resume", type=Path, metavar="DIR", help="continue the search in DIR with its own settings")
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def make_optimizer(args, in_shape: tuple[int, ...], generations_of, bounds, device: str):
    """The optimiser `args` names; `generations_of(population)` gives the gradient's step count."""
    if args.optimizer == "gradient":
        population = args.population or args.samples
        settings = Settings(generations_of(population), args.lr, args.end_lr, args.decay, args.bound_multiplier,
                            args.seed)
        return GradientAscent(in_shape, settings, population, bounds, device)
    if args.optimizer == "genetic":
        return Genetic(in_shape, GeneticSettings(args.population or GeneticSettings.population, args.mutation_rate,
                                                 args.mutation_size, args.selectivity, args.heritability, args.keep,
                                                 args.seed))
    diagonal = {"auto": None, "yes": True, "no": False}[args.cma_diagonal]
    return CMAES(in_shape, CMASettings(args.population or 0, args.sigma0, diagonal, args.seed))


def search_main(parser: OneLineParser, args, argv: list[str]) -> int:
    """The code search (module docstring); returns the exit status."""
    resumed = args.resume is not None
    if resumed:
        defaults = vars(parser.parse_args(["--resume", str(args.resume)]))
        others = [k for k, v in vars(args).items() if k not in ("resume", "no_progress") and v != defaults[k]]
        if others:
            raise UsageError("--resume takes no other options (the run keeps its own): "
                             f"drop --{others[0].replace('_', '-')}")
        record_path = args.resume / "search.json"
        if not record_path.is_file():
            raise UsageError(f"{args.resume} is not a search run folder ({record_path} is missing)")
        record = json.loads(record_path.read_text())
        folder, no_progress = args.resume, args.no_progress
        args = parser.parse_args(record["argv"])
        args.out, args.resume, args.no_progress = folder, folder, no_progress
    if args.generator is None or args.budget is None:
        raise UsageError("a search needs --generator FILE and --budget N_IMAGES")
    if args.steps is not None:
        raise UsageError("--steps is for the plain gradient method; a search takes --budget (images scored in all)")
    args.optimizer = args.optimizer or "genetic"
    if args.budget < 1:
        raise UsageError(f"--budget {args.budget} must be ≥ 1 image")
    with user_input(ValueError, FileNotFoundError, RuntimeError):  # ScorerError is a ValueError
        loaded = load_generator(args.generator, args.device)
        spec = args.scorer
        if spec is None:
            if not args.unit or len(args.unit) != 1:
                raise ScorerError("a search maximises one scorer: give --scorer, or --classifier with one --unit")
            tap = args.tap or DEFAULT_TAPS.get(args.classifier)
            spec = f"{args.classifier}:{tap}:{args.unit[0]}" if tap else f"{args.classifier}:{args.unit[0]}"
        scorer = scorer_from_spec(spec, weights=args.classifier_weights, resolution=args.classifier_resolution,
                                  image_side=loaded.resolution, device=args.device, timeout_s=args.exchange_timeout)
        if args.optimizer == "gradient" and isinstance(scorer, FileExchangeScorer):
            raise ScorerError("the gradient optimiser needs a differentiable scorer; a file exchange gives no "
                              "gradient: use --optimizer genetic or cmaes")
        bounds, bounds_info = None, None
        if args.optimizer == "gradient" and not args.no_bounds:
            encoder_weights = args.encoder_weights or (
                args.classifier_weights if loaded.encoder == spec.split(":")[0] else None)
            bounds, bounds_info = bounds_from_encoder(loaded, encoder_weights, args.bound_images,
                                                      args.bound_multiplier, args.device)
        optimizer = make_optimizer(args, loaded.in_shape, lambda p: max(1, args.budget // p), bounds, args.device)
        if args.budget < optimizer.population:
            raise ValueError(f"--budget {args.budget} is below one generation of {optimizer.population} images "
                             f"({args.optimizer}'s population): give at least {optimizer.population}")
    generations = args.budget // optimizer.population
    settings = {**settings_record(optimizer), "scorer": spec, "generator_sha256": loaded.sha256,
                "generations": generations}
    out = args.out
    if not resumed and (out / "state.pt").exists():
        raise UsageError(f"{out} already holds a search; continue it with --resume {out}, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "search.json"
    if resumed:
        record = json.loads(record_path.read_text())
        record.setdefault("resumed", []).append({"command": provenance.command("repro.synthesize", argv),
                                                 "commit": provenance.git_commit(),
                                                 "from_generation": len((load_state(out) or {}).get("rows", []))})
    else:
        record = provenance.record(provenance.command("repro.synthesize", argv), dev=args.device,
                                   argv=[a if not isinstance(a, Path) else str(a) for a in argv],
                                   generator=str(args.generator), generator_sha256=loaded.sha256,
                                   encoder=f"{loaded.encoder}:{loaded.tap}", scorer=spec, settings=settings,
                                   budget=args.budget, bounds=bounds_info)
    provenance.write(out, record, "search.json")
    try:
        result = search(loaded.generator, scorer, optimizer, generations, out, progress=not args.no_progress,
                        settings=settings)
    except ScorerError as err:
        done = len((load_state(out) or {}).get("rows", []))
        raise UsageError(f"{err} (in generation {done}; generations 0–{done - 1} are saved in {out}: continue with "
                         f"`python -m repro.synthesize --resume {out}`)" if done else str(err)) from err
    last = result["rows"][-1]
    record.update(wall_time_s=last["wall_s"], images_scored=last["images_scored"], best_score=result["best_score"],
                  best_generation=int(torch.argmax(result["best_scores"])), finished=True)
    provenance.write(out, record, "search.json")
    print(f"{args.optimizer}: best score {result['best_score']:.4g} after {last['images_scored']} images "
          f"(generation {record['best_generation']}) → {out / 'best.png'}, {out / 'best-per-generation.png'}")
    return 0


@cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.resume is not None or args.scorer or args.optimizer or args.budget is not None:
        return search_main(parser, args, argv)
    if args.generator is None or not args.unit:
        parser.error("give --generator FILE and --unit N (or --scorer and --budget for a code search)")
    if args.samples < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--steps and --samples must be ≥ 1")
    settings = Settings(args.steps or Settings.steps, args.lr, args.end_lr, args.decay, args.bound_multiplier, args.seed)
    t0 = time.time()
    with user_input(ValueError, FileNotFoundError, RuntimeError):
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
        bounds, bounds_info = None, None
        if not args.no_bounds:
            encoder_weights = args.encoder_weights or (
                args.classifier_weights if loaded.encoder == args.classifier else None)
            bounds, bounds_info = bounds_from_encoder(loaded, encoder_weights, args.bound_images,
                                                      settings.bound_multiplier, args.device)
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
    record = {"command": "python -m repro.synthesize " + " ".join(argv),
              "generator": str(args.generator), "generator_sha256": loaded.sha256, "encoder": f"{loaded.encoder}:{loaded.tap}",
              "classifier": args.classifier, "tap": tap, "classifier_resolution": side, "settings": asdict(settings),
              "bounds": bounds_info, "units": per_unit, "wall_s": round(time.time() - t0, 1), "device": str(args.device)}
    (args.out / "synthesize.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
