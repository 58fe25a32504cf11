"""Decoder for SqueezeNet in Deep Compression form (songhan/SqueezeNet-Deep-Compression).

File layout (little-endian), as documented by its origin:
    uint32 nz[L]                       non-zero count per parameterised layer, prototxt order
    per layer:
        float32 codebook[256]          8-bit weight sharing
        float32 bias[num_output]
        uint8   code[nz]               codebook index of each stored weight
        uint8   gap[ceil(nz / 2)]      4-bit gaps to the previous stored position, low nibble first
A stored weight sits `gap + 1` positions after the previous one (the first at `gap`); gaps longer
than 15 are bridged by stored zeros. Positions never reached take `codebook[0]`, as the original
decoder does (`codebook[code]` over a zero-initialised code array). Every byte must be consumed.

The decoded {layer: [weight, bias]} feed the same Caffe → ONNX → torch path as a caffemodel
(`converters.caffe2onnx.caffe_to_onnx`), or become a real `.caffemodel` (`write_caffemodel`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from converters.caffe2onnx import blob_shapes, caffe_to_onnx
from converters.caffe_net import read_net
from converters.caffemodel import Weights
from converters.errors import ConversionError
from converters.provenance import sha256_file
from converters.torch_convert import TappedOnnxNet, load_onnx_model

CODEBOOK_SIZE = 256
# sha256 of the files in ../shared/assets/squeezenet-dc (SqueezeNet-Deep-Compression @ fb13faa2).
COMPRESSED_SHA256 = "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261"
PROTOTXT_SHA256 = "3bcb0e792e2b50ddeb955b178ba6742e28d8950956915348eba355652040674c"


def default_paths() -> tuple[Path, Path]:
    """(prototxt, compressed file) in the shared assets (`$DEEPSIM_ASSETS` or ../shared/assets),
    checked by sha256 so that a changed file fails here rather than as a wrong network later."""
    root = Path(os.environ.get("DEEPSIM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    folder = root / "squeezenet-dc"
    paths = folder / "SqueezeNet_deploy.prototxt", folder / "compressed_SqueezeNet.net"
    for path, expected in zip(paths, (PROTOTXT_SHA256, COMPRESSED_SHA256)):
        if not path.is_file():
            raise ConversionError(f"missing {path}; set DEEPSIM_ASSETS to the shared assets folder")
        if sha256_file(path) != expected:
            raise ConversionError(f"{path} differs from SqueezeNet-Deep-Compression @ fb13faa2 (sha256); restore the original")
    return paths


def decode(prototxt: str | Path, compressed: str | Path) -> Weights:
    """{layer: [weight, bias]} in the shapes `prototxt` implies, from the compressed file."""
    compressed = Path(compressed)
    data = compressed.read_bytes()
    shapes = blob_shapes(read_net(prototxt))
    layers = list(shapes)
    reader = _Reader(data, compressed)
    counts = reader.take("<u4", len(layers), "header")
    weights: Weights = {}
    for layer, nz in zip(layers, counts.astype(np.int64)):
        if [role for role, _ in shapes[layer]] != ["weight", "bias"]:
            raise ConversionError(f"{compressed}: layer {layer!r} needs blobs {shapes[layer]}; the format stores weight and bias")
        (_, weight_shape), (_, bias_shape) = shapes[layer]
        size = int(np.prod(weight_shape))
        codebook = reader.take("<f4", CODEBOOK_SIZE, f"layer {layer!r} codebook")
        bias = reader.take("<f4", int(np.prod(bias_shape)), f"layer {layer!r} biases")
        codes = reader.take("u1", nz, f"layer {layer!r} codes")
        packed = reader.take("u1", (nz + 1) // 2, f"layer {layer!r} gaps")
        gaps = np.empty(2 * packed.size, np.int64)
        gaps[0::2], gaps[1::2] = packed & 0x0F, packed >> 4  # low nibble first
        positions = np.cumsum(gaps[:nz] + 1) - 1
        if nz and positions[-1] >= size:
            raise ConversionError(f"{compressed}: layer {layer!r} places a weight at {positions[-1]}, beyond its {size} weights")
        dense_codes = np.zeros(size, np.uint8)
        dense_codes[positions] = codes
        weights[layer] = [codebook[dense_codes].reshape(weight_shape), bias.reshape(bias_shape).copy()]
    if reader.offset != len(data):
        raise ConversionError(
            f"{compressed}: {len(data) - reader.offset} bytes left after the last layer; the file does not fit {prototxt}"
        )
    return weights


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, dtype: str, count: int, what: str) -> np.ndarray:
        nbytes = np.dtype(dtype).itemsize * int(count)
        if self.offset + nbytes > len(self.data):
            raise ConversionError(f"{self.path} ends inside {what} (truncated, or not this network's file)")
        array = np.frombuffer(self.data, dtype=dtype, count=int(count), offset=self.offset)
        self.offset += nbytes
        return array


# Input of the released model: BGR 0–255 minus these channel means, 227×227 centre crop of 256×256.
MEAN_BGR = (104.0, 117.0, 123.0)
CROP = 227


def load_squeezenet(prototxt: str | Path, compressed: str | Path, taps: Sequence[str] | None = None,
                    transform: torch.nn.Module | None = None) -> TappedOnnxNet:
    """The decoded SqueezeNet as a tapped torch module (through the Caffe → ONNX → torch path) with its input
    `transform` (`net.transform`; None: identity, the caller hands BGR 0–255 minus `MEAN_BGR`)."""
    weights = decode(prototxt, compressed)
    conversion = caffe_to_onnx(read_net(prototxt), weights, weights_source=f"decoded {compressed}")
    return load_onnx_model(conversion.model, taps, source=f"{prototxt} + {compressed}", transform=transform)


def top1(net: TappedOnnxNet, images: str | Path, synsets: str | Path, limit: int | None = None, batch: int = 25) -> dict:
    """Top-1 over `<wnid>.jpg` files (sorted by name, first `limit`); classes in `synsets` line order.

    Returns {"n", "correct", "top1", "files_sha256"}; files_sha256 is the assets README's folder hash
    (sha256 over `sha256sum` lines) of the files used.
    """
    import cv2

    wnids = [line.split()[0] for line in Path(synsets).read_text().splitlines() if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    files = sorted(Path(images).glob("*.jpg"))[:limit]
    if not files:
        raise ConversionError(f"no .jpg images in {images}")
    listing, correct = hashlib.sha256(), 0
    mean = np.array(MEAN_BGR, np.float32)
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        crops = []
        for path in chunk:
            listing.update(f"{sha256_file(path)}  ./{path.name}\n".encode())
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, 0–255
            if image is None:
                raise ConversionError(f"cannot decode image {path}")
            if image.shape[:2] != (256, 256):
                image = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)  # Caffe warps to 256
            off = (256 - CROP) // 2
            crops.append((image[off : off + CROP, off : off + CROP].astype(np.float32) - mean).transpose(2, 0, 1))
        with torch.no_grad():
            logits = net(torch.from_numpy(np.stack(crops)), "pool_final").flatten(1)  # class scores, 1000×1×1
        predicted = logits.argmax(1).tolist()
        correct += sum(p == index[path.stem] for p, path in zip(predicted, chunk))
    return {"n": len(files), "correct": correct, "top1": correct / len(files), "files_sha256": listing.hexdigest()}
