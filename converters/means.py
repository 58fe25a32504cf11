"""Caffe mean images: `.npy` (pycaffe's ilsvrc_2012_mean.npy) and `.binaryproto` (a `caffe.BlobProto`).

Both give a (C, H, W) float array in the network's channel order (BGR for Caffe ImageNet models), in
0–255 units. Caffe subtracts the mean image centre-cropped to the input size; many ports use the
per-channel means instead (`channel_means`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.caffe_proto import blob_array, parse_binary
from converters.errors import ConversionError


def load_mean(path: str | Path) -> np.ndarray:
    """(C, H, W) float64 mean image from a `.npy` or `.binaryproto` file."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            mean = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConversionError(f"cannot read mean file {path}: {err}") from err
    else:
        blob = parse_binary(path, "BlobProto", "mean file")
        mean = blob_array(blob, f"mean file {path}")
        if mean.ndim == 4 and mean.shape[0] == 1:  # Caffe stores the mean as a 1×C×H×W blob
            mean = mean[0]
    if mean.ndim != 3 or mean.shape[0] not in (1, 3) or mean.size == 0:
        raise ConversionError(f"mean file {path} holds shape {mean.shape}; expected (C, H, W) with C 1 or 3")
    return mean.astype(np.float64)


def channel_means(mean: np.ndarray) -> np.ndarray:
    """Per-channel averages of a (C, H, W) mean image."""
    return mean.reshape(mean.shape[0], -1).mean(axis=1)


def centre_crop(mean: np.ndarray, size: int) -> np.ndarray:
    """The centre `size`×`size` window of a (C, H, W) mean, as Caffe's data transformer takes it."""
    h, w = mean.shape[1:]
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}×{size} from a {h}×{w} mean")
    top, left = (h - size) // 2, (w - size) // 2
    return mean[:, top : top + size, left : left + size]
