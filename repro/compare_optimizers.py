"""`python -m repro.compare_optimizers --generator FILE --out DIR`: the code-search optimisers on the same units.

For each unit of a network (default: 4 class units of the real SqueezeNet, at its class scores `pool_final`),
each optimiser of `repro.code_search` (genetic, cmaes, gradient, each with its defaults) searches the codes of
one generator file from each seed for `--budget` images, and we record the best score so far against the number
of images scored. The reference line is the unit's score on its top natural image: the best of the 1000 ILSVRC
images of `../shared/assets/imagenet-1k-256`, prepared like every evaluation image (warp, centre crop) at the
generator's resolution and scored exactly as the generated images are (same resizing, same network).

The default budget, 480 images, is a whole number of generations for all three: 24 of the genetic algorithm's
20, 20 of CMA-ES's 24 (a 1024-dimensional code), 480 gradient steps of one image (each a forward and a
backward pass: the gradient method is given the network's gradient, which the others never see).

Writes DIR/results.md (the table), DIR/curves.webp (the plot: one panel per unit, the mean over seeds with the
range of seeds shaded, the natural reference dashed), DIR/best-images.webp (per unit: its top natural image, then
each optimiser's best image over the seeds), DIR/curves.jsonl (every run's curve) and DIR/provenance.json
(command, commit, generator and network sha256, data, device, wall time). Any generator file works; the lead
may re-run this command with a better one.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from converters.squeezenet_dc import default_paths
from repro import provenance
from repro.assets import FOLDER_SHA256, asset_file
from repro.code_search import search, settings_record
from repro.comparators import build_net
from repro.data import list_images, listing_sha256, load_images, resolve_folder
from repro.errors import UsageError, cli, user_input
from repro.grids import FIGURE_SUFFIX, save_figure, save_images
from repro.generator_file import load_generator
from repro.invert import OneLineParser
from repro.scorers import UnitScorer, unit_activations
from repro.synthesize import bounds_from_encoder, build_parser, make_optimizer

OPTIMIZERS = ("genetic", "cmaes", "gradient")
COLOURS = {"genetic": "#1b9e77", "cmaes": "#d95f02", "gradient": "#7570b3"}
DEFAULT_UNITS = (1, 309, 417, 945)  # goldfish, bee, balloon, bell pepper


def class_names() -> list[str]:
    """ILSVRC class names by index (the first name of each synset_words.txt line)."""
    return [line.split(" ", 1)[1].split(",")[0] for line in asset_file("caffe/synset_words.txt").read_text().splitlines()]


def natural_reference(objective, images: torch.Tensor, files: list[Path], units: list[int],
                      batch_size: int = 50) -> dict[int, dict[str, Any]]:
    """Per unit: the best score over `images` and which file gave it (scored as the generated images are)."""
    with torch.no_grad():
        scores = torch.cat([torch.stack([unit_activations(out, torch.full((len(out),), u)) for u in units], 1)
                            for out in (objective(images[i : i + batch_size])
                                        for i in range(0, len(images), batch_size))])
    top = scores.argmax(0)
    return {u: {"score": scores[top[j], j].item(), "file": files[top[j]].name, "index": int(top[j])}
            for j, u in enumerate(units)}


def best_at(curve: dict[str, list], images: int) -> float:
    """The best score so far after at most `images` images scored (NaN before the first generation)."""
    values = [b for n, b in zip(curve["images"], curve["best_so_far"]) if n <= images]
    return values[-1] if values else float("nan")


def table(curves: list[dict], reference: dict[int, dict], names: dict[int, str], budget: int, seeds: list[int]) -> str:
    """Markdown: per unit and optimiser, best score at ¼, ½ and the whole budget (mean ± sd over seeds)."""
    import statistics

    marks = [budget // 4, budget // 2, budget]
    lines = [f"| unit | top natural image (of 1000) | optimiser | " + " | ".join(f"best at {m} images" for m in marks)
             + f" | at {budget}: share of natural |", "|---|---|---|" + "---|" * len(marks) + "---|"]
    shares: dict[str, list[float]] = {o: [] for o in OPTIMIZERS}
    for unit, ref in reference.items():
        for k, name in enumerate(OPTIMIZERS):
            runs = [c for c in curves if c["unit"] == unit and c["optimizer"] == name]
            if not runs:
                continue
            cells = []
            for m in marks:
                values = [best_at(c, m) for c in runs]
                if any(v != v for v in values):  # NaN: no whole generation within m images
                    cells.append("–")
                    continue
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.2f} ± {sd:.2f}")
            final = statistics.mean(best_at(c, budget) for c in runs)
            shares[name].append(final / ref["score"])
            head = (f"{unit} {names[unit]}", f"{ref['score']:.2f} ({ref['file']})") if k == 0 else ("", "")
            lines.append(f"| {head[0]} | {head[1]} | {name} | " + " | ".join(cells) + f" | {final / ref['score']:.2f} |")
    lines.append("")
    lines.append("Mean share of the natural reference at the whole budget, over units: "
                 + ", ".join(f"{o} {sum(v) / len(v):.2f}" for o, v in shares.items() if v)
                 + f" ({len(seeds)} seeds per cell).")
    return "\n".join(lines) + "\n"


def plot(curves: list[dict], reference: dict[int, dict], names: dict[int, str], budget: int, scale: int = 3):
    """Best score so far vs images scored, one panel per unit: mean over seeds (line) and their range (band), the
    top natural image's score dashed. A PIL image (no plotting library is among the dependencies; drawn at
    `scale`× and reduced, for smooth lines)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom, legend_h = 320, 240, 52, 12, 26, 36, 26
    units = list(reference)
    canvas = Image.new("RGB", (width * len(units) * scale, (height + legend_h) * scale), "white")
    draw = ImageDraw.Draw(canvas, "RGBA")
    try:
        font = ImageFont.load_default(size=11 * scale)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    rgb = lambda hex_colour, alpha=255: tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) + (alpha,)  # noqa: E731

    def dashed(points, colour, dash=6):
        (x1, y1), (x2, _) = points
        x = x1
        while x < x2:
            draw.line([(x, y1), (min(x + dash * scale, x2), y1)], fill=colour, width=scale)
            x += 2 * dash * scale

    for p, unit in enumerate(units):
        x0 = p * width
        runs = [c for c in curves if c["unit"] == unit]
        ref = reference[unit]["score"]
        ymax = max(max(c["best_so_far"]) for c in runs) * 1.1
        on_scale = ref <= 2 * ymax  # a reference far above every curve is written, not drawn (it would flatten them)
        ymax = max(ymax, ref * 1.05) if on_scale else ymax
        ymin = min(0.0, *[min(c["best_so_far"]) for c in runs])
        sx = lambda n: scale * (x0 + left + (width - left - right) * n / budget)  # noqa: E731
        sy = lambda v: scale * (top + (height - top - bottom) * (1 - (v - ymin) / (ymax - ymin)))  # noqa: E731
        draw.text((scale * (x0 + left), scale * 6), f"unit {unit} ({names[unit]})", fill="black", font=font)
        draw.rectangle([sx(0), sy(ymax), sx(budget), sy(ymin)], outline=(68, 68, 68), width=scale)
        for k in range(5):
            v, n = ymin + (ymax - ymin) * k / 4, budget * k / 4
            draw.text((sx(0) - 4 * scale, sy(v)), f"{v:.1f}", fill="black", font=font, anchor="rm")
            draw.text((sx(n), sy(ymin) + 4 * scale), f"{n:.0f}", fill="black", font=font, anchor="mt")
        draw.text(((sx(0) + sx(budget)) / 2, scale * (height - 4)), "images scored", fill="black", font=font,
                  anchor="mb")
        for name in OPTIMIZERS:
            group = [c for c in runs if c["optimizer"] == name]
            if not group:
                continue
            xs = group[0]["images"]
            rows = [[best_at(c, n) for c in group] for n in xs]
            band = [(sx(n), sy(min(r))) for n, r in zip(xs, rows)] + \
                   [(sx(n), sy(max(r))) for n, r in zip(reversed(xs), reversed(rows))]
            if len(band) > 2:
                draw.polygon(band, fill=rgb(COLOURS[name], 50))
            mean = [(sx(n), sy(sum(r) / len(r))) for n, r in zip(xs, rows)]
            draw.line(mean if len(mean) > 1 else mean * 2, fill=rgb(COLOURS[name]), width=2 * scale, joint="curve")
        if on_scale:
            dashed([(sx(0), sy(ref)), (sx(budget), 0)], (34, 34, 34))
        else:
            draw.text((sx(budget) - 4 * scale, sy(ymax) + 4 * scale), f"top natural image: {ref:.1f} (off the scale)",
                      fill="black", font=font, anchor="rt")
    legend = [(name, COLOURS[name]) for name in OPTIMIZERS] + [("top natural image", "#222222")]
    for i, (label, colour) in enumerate(legend):
        x, y = scale * (12 + i * 130), scale * (height + 12)
        if i == len(legend) - 1:
            dashed([(x, y), (x + 24 * scale, 0)], rgb(colour))
        else:
            draw.line([(x, y), (x + 24 * scale, y)], fill=rgb(colour), width=2 * scale)
        draw.text((x + 30 * scale, y), label, fill="black", font=font, anchor="lm")
    return canvas.resize((canvas.width // scale, canvas.height // scale), Image.LANCZOS)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m repro.compare_optimizers", description=__doc__.split("\n")[0])
    parser.add_argument("--generator", required=True, type=Path, help="a generator file (repro.generator_file)")
    parser.add_argument("--net", default="squeezenet", help="registry name of the scored network")
    parser.add_argument("--tap", default="pool_final", help="its layer (default: SqueezeNet's class scores)")
    parser.add_argument("--units", type=int, nargs="+", default=list(DEFAULT_UNITS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=480, help="images scored per run")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--natural", default="imagenet-1k-256", help="reference images (asset name or folder)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.time()

    provenance.git_commit()  # the commit of the code that runs, asked before it runs

    with user_input(ValueError, FileNotFoundError, RuntimeError):  # ScorerError is a ValueError
        loaded = load_generator(args.generator, args.device)
        net = build_net(args.net, resolution=loaded.resolution).to(args.device)
        scorers = {u: UnitScorer(net, args.tap, u, loaded.resolution, name=f"{args.net}:{args.tap}:{u}") for u in args.units}
        for scorer in scorers.values():
            scorer.check_unit(loaded.resolution, args.device)
        folder = resolve_folder(args.natural, verify=True)
        files = list_images(folder)
        natural = load_images(files, loaded.resolution).to(args.device)
        bounds, bounds_info = (bounds_from_encoder(loaded, None, None, 3.0, args.device)
                               if "gradient" in args.optimizers else (None, None))
    classes = class_names() if args.net == "squeezenet" and args.tap == "pool_final" else None
    names = {u: classes[u] if classes else f"{args.tap} {u}" for u in args.units}
    reference = natural_reference(next(iter(scorers.values())).objective, natural, files, args.units)
    defaults = build_parser().parse_args([])
    curves, settings, best_images = [], {}, {}
    runs = [(o, u, s) for o in args.optimizers for u in args.units for s in args.seeds]
    for name, unit, seed in tqdm(runs, desc="compare optimisers", unit="run"):
        options = type(defaults)(**{**vars(defaults), "optimizer": name, "seed": seed})
        optimizer = make_optimizer(options, loaded.in_shape, lambda p: args.budget // p, bounds, args.device)
        generations = args.budget // optimizer.population
        if generations < 1:
            raise UsageError(f"--budget {args.budget} is below one generation of {optimizer.population} images "
                             f"({name})")
        settings[name] = {k: v for k, v in settings_record(optimizer).items() if k != "seed"}  # seeds: below
        started = time.time()
        result = search(loaded.generator, scorers[unit], optimizer, generations, progress=False)
        curves.append({"optimizer": name, "unit": unit, "seed": seed,
                       "images": [r["images_scored"] for r in result["rows"]],
                       "best_so_far": [r["best_so_far"] for r in result["rows"]], "wall_s": round(time.time() - started, 1)})
        if result["best_score"] > best_images.get((name, unit), (float("-inf"), None))[0]:
            best_images[name, unit] = (result["best_score"], result["best_code"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curves))
    text = table(curves, reference, names, args.budget, args.seeds)
    (args.out / "results.md").write_text(
        f"# Code search on {args.net}:{args.tap}: best score vs images scored\n\n"
        f"`{provenance.command('repro.compare_optimizers', argv)}` · generator `{args.generator.name}` (sha256 "
        f"`{loaded.sha256[:16]}…`, {loaded.resolution} px, code {tuple(loaded.in_shape)}) · seeds "
        f"{', '.join(map(str, args.seeds))} · budget {args.budget} images per run · scores are the unit's value "
        f"before softmax on images at {loaded.resolution} px · genetic and cmaes see scores only; gradient is "
        "given the network's gradient (a forward and a backward pass per image) · provenance in `provenance.json`\n\n"
        + text + f"\n![best score vs images scored](curves{FIGURE_SUFFIX})\n\n![per unit: top natural image, then the "
        f"best image of genetic, cmaes, gradient](best-images{FIGURE_SUFFIX})\n")
    save_figure(plot(curves, reference, names, args.budget), args.out / f"curves{FIGURE_SUFFIX}")

    tiles = []
    for unit in args.units:
        tiles.append(natural[reference[unit]["index"]].cpu())
        for name in args.optimizers:
            with torch.no_grad():
                tiles.append(loaded.generator(best_images[name, unit][1][None].to(args.device)).clamp(0, 1)[0].cpu())
    save_images(torch.stack(tiles), args.out / f"best-images{FIGURE_SUFFIX}", columns=1 + len(args.optimizers))

    natural_id = (f"../shared/assets/{args.natural} sha256={FOLDER_SHA256[args.natural]}" if args.natural in FOLDER_SHA256
                  else f"{folder} listing sha256={listing_sha256(str(folder))}")
    weights = {"scored_net": " + ".join(f"{p} sha256={provenance.weights_sha256(p)}" for p in default_paths())
               if args.net == "squeezenet" else args.net}
    record = provenance.record(
        provenance.command("repro.compare_optimizers", argv), dev=args.device, started=t0,
        data={"natural": f"{natural_id} ({len(files)} images)"}, weights=weights,
        generator=str(args.generator), generator_sha256=loaded.sha256, generator_source=loaded.source,
        generator_config={k: loaded.config.get(k) for k in ("preset", "steps", "resolution", "encoder", "layer")},
        scored=f"{args.net}:{args.tap}", units=args.units, seeds=args.seeds, budget=args.budget,
        optimizers=settings, gradient_bounds=bounds_info, reference=reference,
        run_wall_s={name: round(sum(c["wall_s"] for c in curves if c["optimizer"] == name), 1) for name in args.optimizers})
    provenance.write(args.out, record)
    print(f"{args.out / 'results.md'}, {args.out / f'curves{FIGURE_SUFFIX}'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
