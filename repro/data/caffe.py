"""One image prepared the way Caffe prepared ILSVRC: decode, warp to a square, crop, mirror.

Caffe's recipe warps every image to 256×256 (aspect ratio ignored), then takes a 227×227 crop — random with
a random mirror for training, central for evaluation. For reduced-scale runs at resolution R the warp is
scaled in proportion (`warp_size`). Two warps: Caffe's own bilinear one (`warp_like_caffe`, what the offline
`repro.data.prewarp` writes) and the bicubic one this project always used online (`load_warped`, which only
decodes a file already warped). Kept apart from datasets and loaders because the pre-warp and the evaluation
images (`load_images`) need these steps without them. The rest of Caffe's preparation (BGR, mean
subtraction) is *not* here: it belongs to each network's `transform`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# What PIL raises for a file it cannot decode; DecompressionBombError (a header claiming more than ~179
# megapixels) derives from Exception alone and would otherwise end the epoch.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def warp_size(resolution: int) -> int:
    """Side of the warped image before cropping: 256 at R=227, scaled in proportion otherwise."""
    return 256 if resolution == 227 else int(round(256 * resolution / 227))


def decode_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file (greyscale and alpha converted to RGB): uint8 (H, W, 3).

    OpenCV's decoder (libjpeg-turbo) gives the same pixels as PIL's on JPEGs (checked on the shared assets)
    at twice the speed, but it decodes a truncated JPEG without complaint, filling the rest with grey; so
    only a JPEG that ends with its end-of-image marker takes that path, everything else PIL's."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() == b"\xff\xd9":
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is not None:
            return bgr[:, :, ::-1]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_warped(path: str | Path, warp: int) -> np.ndarray:
    """Decode and warp to warp×warp (bicubic, as this project always did online; a pre-warped file of that
    size is only decoded); uint8 (warp, warp, 3)."""
    array = decode_rgb(path)
    if array.shape[:2] != (warp, warp):
        return np.asarray(Image.fromarray(array).resize((warp, warp), Image.BICUBIC), dtype=np.uint8)
    return np.ascontiguousarray(array)


def warp_like_caffe(array: np.ndarray, warp: int) -> np.ndarray:
    """Caffe's convert_imageset warp: cv::resize to warp×warp with OpenCV's default, bilinear
    interpolation (INTER_LINEAR, no anti-aliasing), aspect ratio ignored. uint8 (warp, warp, 3)."""
    return cv2.resize(np.ascontiguousarray(array), (warp, warp), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Crop:
    """Where to crop and whether to mirror, drawn by the sampler from a per-sample seed."""

    top: int
    left: int
    mirror: bool


def draw_crop(seed: int, warp: int, resolution: int, train: bool, mirror: bool) -> Crop:
    if not train:
        offset = (warp - resolution) // 2
        return Crop(offset, offset, False)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, warp - resolution + 1, size=2)
    return Crop(int(top), int(left), bool(mirror and rng.random() < 0.5))


def crop_uint8(array: np.ndarray, crop: Crop, resolution: int) -> torch.Tensor:
    """Crop (and mirror) a warped uint8 (H, W, 3) image into a uint8 (3, R, R) tensor, 0–255."""
    patch = array[crop.top : crop.top + resolution, crop.left : crop.left + resolution]
    if crop.mirror:
        patch = patch[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))


def to_tensor(array: np.ndarray, crop: Crop, resolution: int) -> torch.Tensor:
    """Crop (and mirror) a warped uint8 image into a (3, R, R) float tensor in [0, 1]."""
    return crop_uint8(array, crop, resolution).float().div_(255.0)
