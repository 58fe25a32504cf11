"""`python -m repro.invert IMAGES... [--generator FILE] --out DIR`: reconstruct images from their features.

Without `--generator`, the generator shipped with the package is used (`repro.generator_file.SHIPPED`: AlexNet
pool5 → 96 px).
Each image goes through the encoder the generator file names (`repro.comparators`, at the file's tap and
resolution) and back through the generator; `DIR/<name>.png` shows original | reconstruction side by side
and `DIR/grid.png` all pairs. `--features FILE.npz` inverts given features instead (the `features` array of
`python -m repro.features`, shaped (N, *code shape) or (N, C) for a global-pooling tap); no encoder is built
and `DIR/<name>.png` holds the reconstruction alone.

Bad inputs (a file that is not a generator file, features of the wrong shape, an image that does not
decode) end with one line saying what is wrong and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from repro.data import DataError, list_images, load_images
from repro.devices import user_device
from repro.errors import DeepsimError, cli, user_input
from repro.generator_file import load_generator, shipped_generator
from repro.models import Inverter


class InvertError(DeepsimError, ValueError):
    """An input the command cannot use; the message is the one line printed."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (`error: …`, exit 2), not usage + message; also
    repro.synthesize's."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message}\n")


def read_features(path: Path, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, list[str]]:
    """Codes (N, *in_shape) from an .npz with a `features` array (and optional `paths`); names for the outputs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data:
                raise InvertError(f"{path} holds no 'features' array (it has {', '.join(data.files) or 'none'})")
            features = data["features"]
            paths = [str(p) for p in data["paths"]] if "paths" in data else []
    except InvertError:
        raise
    except Exception as err:  # zip/npy errors of every kind
        raise InvertError(f"cannot read features file {path}: {type(err).__name__}: {err}") from None
    n = features.shape[0] if features.ndim else 0
    per_item = features.shape[1:]
    if n == 0 or int(np.prod(per_item)) != int(np.prod(in_shape)) or (
            len(per_item) > 1 and tuple(per_item) != tuple(in_shape)):
        raise InvertError(f"features in {path} have shape {features.shape}, but the generator takes "
                          f"(N, {', '.join(map(str, in_shape))})")
    names = [Path(p).stem for p in paths] if len(paths) == n else [f"{i:05d}" for i in range(n)]
    return torch.from_numpy(features.astype(np.float32)).reshape(n, *in_shape), names


def read_images(inputs: list[str], resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Pipeline images (N, 3, R, R) of every file under `inputs`; any file that does not decode is an error."""
    try:
        files = [f for p in inputs for f in list_images(p)]
        return load_images(files, resolution), [f.stem for f in files]
    except DataError as err:
        raise InvertError(str(err)) from None


def with_encoder(loaded, encoder_weights: str | None, device: str):
    """The file's Inverter; an encoder that needs the user's weights file says which option gives it."""
    try:
        return Inverter.from_file(loaded, encoder_weights, device)
    except ValueError as err:
        if "needs the original weights" in str(err):
            raise InvertError(f"the generator inverts {loaded.encoder}:{loaded.tap}, whose weights are yours to "
                              "bring: pass --encoder-weights FILE (e.g. bvlc_reference_caffenet.caffemodel)") from None
        raise


def unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def write_outputs(out: Path, names: list[str], reconstructions: torch.Tensor,
                  originals: torch.Tensor | None) -> list[Path]:
    """One PNG per item (original | reconstruction, or the reconstruction alone) and grid.png of all."""
    from torchvision.utils import make_grid, save_image

    out.mkdir(parents=True, exist_ok=True)
    shown = reconstructions.clamp(0, 1)
    written = []
    for i, name in enumerate(unique(names)):
        tiles = shown[i : i + 1] if originals is None else torch.stack([originals[i], shown[i]])
        save_image(tiles, out / f"{name}.png", nrow=2, padding=2, pad_value=1.0)
        written.append(out / f"{name}.png")
    pairs = shown if originals is None else torch.stack([originals, shown], 1).flatten(0, 1)
    save_image(make_grid(pairs, nrow=8, padding=2, pad_value=1.0), out / "grid.png")  # 4 pairs or 8 images a row
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m repro.invert", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="*", help="image files or folders (recursive); not with --features")
    parser.add_argument("--generator", type=Path, help="a generator file (repro.generator_file); default: the one "
                        "shipped with the package (repro/generators, protocol CONV5*: AlexNet pool5 → 96 px)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--features", type=Path, help=".npz with a 'features' array to invert instead of images")
    parser.add_argument("--encoder-weights", help="the encoder's weights file, for encoders that need one (caffenet)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.features):
        parser.error("give either IMAGES or --features FILE.npz (one of the two)")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be ≥ 1, got {args.batch_size}")
    user_device(args.device)  # --device tpu, or cuda where CUDA is unusable: one line before anything loads
    with user_input(ValueError, FileNotFoundError):
        if args.generator is None:
            args.generator = shipped_generator()
        loaded = load_generator(args.generator, args.device)
        if args.features:
            codes, names = read_features(args.features, loaded.in_shape)
            originals = None
            decode = loaded.generator
        else:
            originals, names = read_images(args.images, loaded.resolution)
            inverter = with_encoder(loaded, args.encoder_weights, args.device)
            codes = originals
            decode = lambda x: inverter(x)[0]  # noqa: E731
    outs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(codes), args.batch_size), desc="invert", unit="batch", disable=len(codes) <= args.batch_size):
            outs.append(decode(codes[start : start + args.batch_size].to(args.device)).float().cpu())
    written = write_outputs(args.out, names, torch.cat(outs), originals)
    what = f"features {args.features}" if args.features else f"{len(written)} image(s) via {loaded.encoder}:{loaded.tap}"
    print(f"{what} → {loaded.path.name} → {args.out}/ ({len(written)} PNGs + grid.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
