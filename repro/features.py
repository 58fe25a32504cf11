"""`python -m repro.features --net alexnet --layer pool5 IMAGES...`: features of images, printed and saved.

The first smoke job of the project: images → network input transform → tapped network → `.npz`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from repro.comparators import NETS, build_net
from repro.data import DataError, list_images, load_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.features", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files or folders (recursive)")
    parser.add_argument("--net", default="alexnet", choices=sorted(NETS), help="network (default: pretrained alexnet)")
    parser.add_argument("--layer", default="pool5", help="tap, e.g. conv5, pool5, fc6")
    parser.add_argument("--resolution", type=int, default=227, help="input side in pixels")
    parser.add_argument("--weights", help="weights file for caffenet/videonet (caffemodel, or ONNX with --onnx)")
    parser.add_argument("--prototxt", help="prototxt for a caffemodel given with --weights")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="features.npz", help="output .npz (features, paths)")
    args = parser.parse_args(argv)
    try:
        net = build_net(args.net, resolution=args.resolution, weights=args.weights, prototxt=args.prototxt)
        if args.layer not in net.taps:
            parser.error(f"unknown layer {args.layer!r} for {args.net}; choose from {', '.join(net.taps)}")
        files = [f for p in args.images for f in list_images(p)]
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(files), args.batch_size), desc=f"{args.net}:{args.layer}", unit="batch"):
            images = load_images(files[start : start + args.batch_size], args.resolution)
            chunks.append(net(net.transform(images), tap=args.layer).numpy())
    features = np.concatenate(chunks)
    np.savez_compressed(args.out, features=features, paths=np.array([str(f) for f in files]))
    print(f"{len(files)} images → {args.net}:{args.layer} features {tuple(features.shape)} "
          f"(mean {features.mean():.4f}, std {features.std():.4f}) saved to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
