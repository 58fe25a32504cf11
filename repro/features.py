"""`python -m repro.features --net alexnet --layer pool5 IMAGES...`: features of images, printed and saved.

The first smoke job of the project: images → network input transform → tapped network → `.npz`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from repro.comparators import NETS, build_net
from repro.needs import USER_WEIGHTS
from repro.data import DataError, list_images, load_images
from repro.errors import UsageError, cli, user_input
from repro.invert import OneLineParser
from repro.nets.caffenet import require_tap


def readable(files: list[Path], resolution: int) -> tuple[torch.Tensor, list[Path]] | None:
    """The batch of `files` that decode, and their paths; each file that does not is reported and skipped
    (None if none does), so that one corrupt image in a folder does not lose the others' features."""
    try:
        return load_images(files, resolution), files
    except DataError:
        pass
    images, kept = [], []
    for path in files:
        try:
            images.append(load_images([path], resolution))
            kept.append(path)
        except DataError as err:
            tqdm.write(f"warning: skipping {err}", file=sys.stderr)
    return (torch.cat(images), kept) if kept else None


@cli
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m repro.features", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files or folders (recursive)")
    parser.add_argument("--net", default="alexnet", choices=sorted(NETS), help="network (default: pretrained alexnet)")
    parser.add_argument("--layer", default="pool5", help="tap, e.g. conv5, pool5 (fc6–fc8 of alexnet need --weights)")
    parser.add_argument("--resolution", type=int, default=227, help="input side in pixels")
    parser.add_argument("--weights", help="weights file: a .caffemodel or ONNX file for caffenet/videonet/onnx, a full "
                                          "torchvision AlexNet state dict for alexnet's fc6–fc8")
    parser.add_argument("--prototxt", help="prototxt for a caffemodel given with --weights")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="features.npz", help="output .npz (features, paths)")
    args = parser.parse_args(argv)
    if args.net in USER_WEIGHTS and not args.weights:
        raise UsageError(f"--net {args.net} needs your {USER_WEIGHTS[args.net]}: pass --weights FILE")
    with user_input():
        net = build_net(args.net, resolution=args.resolution, weights=args.weights, prototxt=args.prototxt)
        require_tap(net, args.layer, args.net)  # unknown, or without trained weights (alexnet fc6–fc8)
        files = [f for p in args.images for f in list_images(p)]
    chunks, kept = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(files), args.batch_size), desc=f"{args.net}:{args.layer}", unit="batch"):
            batch = readable(files[start : start + args.batch_size], args.resolution)
            if batch is not None:
                chunks.append(net(net.transform(batch[0]), tap=args.layer).numpy())
                kept.extend(batch[1])
    if not kept:
        raise UsageError(f"cannot read image{'s' if len(files) > 1 else ''}: none of the {len(files)} given decodes "
                         f"({files[0]}{', …' if len(files) > 1 else ''})")
    files, features = kept, np.concatenate(chunks)
    np.savez_compressed(args.out, features=features, paths=np.array([str(f) for f in files]))
    print(f"{len(files)} images → {args.net}:{args.layer} features {tuple(features.shape)} "
          f"(mean {features.mean():.4f}, std {features.std():.4f}) saved to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
