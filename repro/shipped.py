"""`python -m repro.shipped RUN_DIR --step N`: make the generator that ships with the package, and its card.

The shipped generator lets `python -m repro.invert photo.jpg --out DIR` work on a fresh clone without training.
It is a float16 generator file (`repro.generator_file.SHIPPED`, ≤ 8 MB: the one tracked file allowed past
5 MB) of a protocol CONV5* run (`repro.config`): it inverts AlexNet pool5 (256×6×6, the encoder seeing the image
resized to 227 px) into 96 px images. Beside it, `<name>.md` is its model card, written from the run's
provenance and its evaluation (`python -m repro.evaluate RUN --step N`): data, steps, schedule, metrics, sha256.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from repro.errors import cli, user_input
from repro.generator_file import SHIPPED, SHIPPED_FOLDER, SHIPPED_NAME, GeneratorFileError
from repro.provenance import command
from repro.runs import PROVENANCE_FILE, export_run, run_config

CARD = SHIPPED_FOLDER / f"{SHIPPED_NAME}.md"
MAX_BYTES = 8 * 2**20

CARD_METRICS = (("image_error_pct", "image error (%)"), ("feature_error_pct", "feature error (%)"),
                ("nn_own_image_pct", "nearest own original, image space (%)"),
                ("nn_own_feature_pct", "nearest own original, feature space (%)"), ("lpips", "LPIPS"),
                ("gradient_error_pct", "gradient error (%)"), ("psnr", "PSNR (dB)"))


def model_card(record: dict[str, Any], provenance: dict[str, Any], evaluation: dict[str, Any] | None,
               command: str) -> str:
    config = provenance["config"]
    lines = [f"# {SHIPPED_NAME}: the generator shipped with deepsim", "",
             "Inverts AlexNet pool5 (the paper's CONV5 code, 256×6×6, the encoder seeing the image resized to 227 px) "
             "into 96×96 RGB images: protocol CONV5* of `repro.config`. Used by `python -m repro.invert IMAGES --out "
             "DIR` when no `--generator` is given.", "",
             f"- made by: `{command}`",
             f"- from: run `{record['source']['run']}`, step {record['source']['step']} "
             f"(checkpoint {record['source']['checkpoint']})",
             f"- training command: `{provenance['command']}` at commit {provenance['commit']}",
             f"- preset {config['preset']}: loss λ_feat {config['lambda_feat']}, λ_adv {config['lambda_adv']}, "
             f"λ_img {config['lambda_img']} (from {config.get('lambda_img_start') or config['lambda_img']} over "
             f"{config.get('lambda_img_decay_steps', 0)} iterations), batch {config['batch_size']}, generator width "
             f"{config['generator_width']}, seed {config['seed']}",
             f"- data: {provenance['data']['train']} (training), {provenance['data']['eval']} (evaluation)",
             f"- weights: {provenance['weights'].get('encoder', '')}",
             f"- device: {provenance['device']}, wall time {provenance['wall_time_s'] / 60:.0f} min",
             f"- file: float16, sha256 of its tensors {record['sha256']}", ""]
    if not config["lambda_feat"] and not config["lambda_adv"]:
        lines += ["This is the image-loss generator of the protocol (Dosovitskiy & Brox 2016a, Table 2's 'Our image "
                  "loss'): blurry, but it follows its input's layout and colours. It ships instead of a DeePSiM generator "
                  "because the DeePSiM runs of the same protocol still paint checkerboard textures at this CPU budget "
                  "and find their own originals less than half as often (results/conv5star/README.md).", ""]
    if evaluation is not None:
        result = evaluation["results"][0]
        lines += [f"Evaluation (`{evaluation['provenance']['command']}`), {evaluation['protocol']['n_images']} held-out "
                  f"images of {evaluation['protocol']['eval_data']} (chance of finding one's own original "
                  f"{100 / evaluation['protocol']['n_images']:.2f} %), step {result['step']}:", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {label} | {result[key]:.3g} |" for key, label in CARD_METRICS if result.get(key) is not None]
        lines.append("")
    lines += ["Limits: 96 px images; trained on Caltech-101 (9,144 images) for a few thousand iterations on a CPU, "
              "not the paper's 1M iterations on ILSVRC-2012; the encoder is the torchvision-layout AlexNet, not "
              "CaffeNet.", ""]
    return "\n".join(lines)


def ship(run_dir: Path, step: int | None, evaluation: Path | None, command: str) -> Path:
    """Write the shipped generator (float16) of `run_dir` at `step` and its model card; returns the file."""
    run_config(run_dir, finished=True)  # the one rule: a finished run folder, before anything is written
    SHIPPED_FOLDER.mkdir(parents=True, exist_ok=True)
    record = export_run(run_dir, SHIPPED, step=step, half=True)
    size = SHIPPED.stat().st_size
    if size > MAX_BYTES:
        SHIPPED.unlink()
        raise GeneratorFileError(f"the generator of {run_dir} takes {size / 2**20:.1f} MB in float16, "
                                 f"over the {MAX_BYTES / 2**20:.0f} MB the package may carry")
    provenance = json.loads((run_dir / PROVENANCE_FILE).read_text())
    evaluated = json.loads(evaluation.read_text()) if evaluation else None
    if evaluated is not None and evaluated["results"][0]["step"] != record["source"]["step"]:
        raise GeneratorFileError(f"{evaluation} evaluates step {evaluated['results'][0]['step']}, not the shipped "
                                 f"step {record['source']['step']}: evaluate that step (--step)")
    CARD.write_text(model_card(record, provenance, evaluated, command))
    return SHIPPED


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.shipped", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a protocol CONV5* run folder")
    parser.add_argument("--step", type=int, help="the checkpoint to ship (default: the newest intact one)")
    parser.add_argument("--evaluation", type=Path, help="metrics.json of that step, for the model card")
    args = parser.parse_args(argv)
    with user_input():  # a run folder, step or evaluation file the user named that does not fit
        path = ship(args.run_dir, args.step, args.evaluation, command("repro.shipped", argv or sys.argv[1:]))
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MB) and {CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
