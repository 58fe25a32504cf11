"""Caffe and ONNX models → PyTorch modules with feature taps by Caffe blob name.

    net = converters.load_caffe("deploy.prototxt", "weights.caffemodel")
    pool5 = net(x, "pool5")          # x: the network's raw input, e.g. BGR 0–255 minus the mean

Pipeline: prototxt + caffemodel → `caffe2onnx` (ONNX opset 13, every blob an output) → `torch_convert`
(onnx2torch, taps). `verify` checks a conversion against onnxruntime and OpenCV's Caffe importer.
Submodules are imported on first use, so the command line answers bad arguments without loading torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

# The loaders import caffe2onnx and torch_convert (onnx, onnx2torch, torch) inside themselves: importing the package
# for its errors or paths loads none of them.
from converters.errors import ConversionError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from converters.caffe2onnx import Conversion, convert_caffe
    from converters.torch_convert import TappedOnnxNet

__all__ = ["ConversionError", "TappedOnnxNet", "Conversion", "load_caffe", "load_onnx", "caffe_blobs", "convert_caffe"]
_LAZY = {"TappedOnnxNet": "converters.torch_convert", "Conversion": "converters.caffe2onnx",
         "convert_caffe": "converters.caffe2onnx"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")


def load_caffe(
    prototxt: str | Path,
    caffemodel: str | Path,
    taps: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    transform: nn.Module | None = None,
) -> TappedOnnxNet:
    """A Caffe network as a torch module (eval mode).

    taps: blob names to keep available (the graph is cut after the deepest); None keeps every blob.
    input_shapes: {input blob: (N, C, H, W)} where the prototxt does not state it (Data layers) or
    to convert at another spatial size.
    transform: the network's input transform (`net.transform`, e.g. the mean it was trained with); None: identity.
    """
    from converters.caffe2onnx import convert_caffe
    from converters.torch_convert import load_onnx_model

    conversion = convert_caffe(prototxt, caffemodel, input_shapes)
    return load_onnx_model(conversion.model, taps, source=f"{prototxt} + {caffemodel}", transform=transform)


def read_onnx(path: str | Path):
    """The ModelProto of an ONNX file; a file that is not one (protobuf's DecodeError, …) is a ConversionError."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, …
        raise ConversionError(f"cannot read ONNX file {path}: {err}") from err


def load_onnx(path: str | Path, taps: Sequence[str] | None = None, transform: nn.Module | None = None) -> TappedOnnxNet:
    """An ONNX file (ours, or model-zoo style of any opset) as a torch module with taps and its input `transform`
    (`net.transform`; None: identity), in eval mode."""
    from converters.torch_convert import load_onnx_model

    return load_onnx_model(read_onnx(path), taps, source=str(path), transform=transform)


def caffe_blobs(prototxt: str | Path, caffemodel: str | Path) -> dict[str, list[np.ndarray]]:
    """{layer: [weight, bias, …]} as float32 numpy in Caffe's layout, each blob checked against the
    shape the prototxt implies (for loading a caffemodel into a hand-written network such as
    `repro.nets.caffenet.CaffeNet.load_caffe_blobs`)."""
    from converters.caffe2onnx import convert_caffe

    return convert_caffe(prototxt, caffemodel).weights
