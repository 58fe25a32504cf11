"""Read and write `.caffemodel` weight files (binary `caffe.NetParameter`), current and V1 layouts.

A caffemodel repeats the network's layers with their parameter blobs attached; Caffe matches them to
the prototxt's layers by name. `read_weights` returns {layer name: [blob arrays]} with the shapes the
file states; `converters.caffe2onnx` checks them against the prototxt. `write_caffemodel` writes real
files that Caffe and OpenCV read, used by the tests and the SqueezeNet decoder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from google.protobuf.message import Message

from converters.caffe_proto import (
    V1_TYPE_NAMES, array_blob, blob_array, enum_name, message_class, parse_binary, parse_prototxt,
)
from converters.errors import ConversionError

Weights = dict[str, list[np.ndarray]]
_V1_ENUM_OF_TYPE = {type_name: enum for enum, type_name in V1_TYPE_NAMES.items() if type_name}


def read_weights(caffemodel: str | Path) -> Weights:
    """{layer name: [blob, …]} for every layer of the file that has parameter blobs."""
    path = Path(caffemodel)
    net = parse_binary(path, "NetParameter", "caffemodel")
    if net.layer and net.layers:
        raise ConversionError(f"caffemodel {path} mixes current `layer` and V1 `layers` entries; Caffe rejects this too")
    entries = net.layer or net.layers
    if not entries:
        raise ConversionError(f"caffemodel {path} holds no layers; is it a Caffe weights file?")
    weights: Weights = {}
    for entry in entries:
        if not entry.blobs:
            continue
        if entry.name in weights:
            raise ConversionError(f"caffemodel {path} has two layers named {entry.name!r} with weights; which one is meant is ambiguous")
        weights[entry.name] = [
            blob_array(blob, f"caffemodel {path}, layer {entry.name!r}, blob {i}") for i, blob in enumerate(entry.blobs)
        ]
    return weights


def write_caffemodel(
    path: str | Path,
    layers: Mapping[str, Sequence[np.ndarray]],
    prototxt: str | Path,
    layout: Literal["v2", "v1"] = "v2",
) -> Path:
    """Write the layers of `prototxt` with `layers[name]` attached as blobs, as Caffe saves a net.

    layout "v2": current `layer` entries with `shape` blobs (Caffe ≥ 2015). "v1": legacy `layers`
    entries with enum types and num/channels/height/width blobs (older model-zoo files); `Input`
    layers become the top-level `input`/`input_dim` fields, as V1 deploy files had them.
    """
    net = net_parameter(prototxt, layers, layout)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(net.SerializeToString())
    os.replace(tmp, path)
    return path


def net_parameter(
    prototxt: str | Path, layers: Mapping[str, Sequence[np.ndarray]], layout: Literal["v2", "v1"] = "v2"
) -> Message:
    """The `caffe.NetParameter` (raw pool) that `write_caffemodel` writes; with no layers given and
    `text_format`, also a prototxt in either layout."""
    if layout not in ("v2", "v1"):
        raise ValueError(f"layout must be 'v2' or 'v1', not {layout!r}")
    proto = parse_prototxt(prototxt)
    names = [entry.name for entry in (proto.layer or proto.layers)]
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise ValueError(f"weights given for layers {unknown} that {prototxt} does not define")
    net = message_class("NetParameter", raw=True)()
    net.name = proto.name
    net.input.extend(proto.input)
    for shape in proto.input_shape:
        net.input_shape.add().dim.extend(shape.dim)
    net.input_dim.extend(proto.input_dim)
    layer_class = message_class("LayerParameter", raw=True)
    v1_class = message_class("V1LayerParameter", raw=True)
    for entry in proto.layer or proto.layers:
        blobs = [array_blob(np.asarray(a), legacy_4d=layout == "v1") for a in layers.get(entry.name, ())]
        if layout == "v2":
            out = net.layer.add()
            if proto.layer:
                out.ParseFromString(entry.SerializeToString())
            else:
                out.CopyFrom(_v1_to_v2(entry, layer_class))
        elif proto.layers:
            out = net.layers.add()
            out.ParseFromString(entry.SerializeToString())
        elif entry.type == "Input":
            _input_layer_to_fields(entry, net, prototxt)
            continue
        elif entry.type not in _V1_ENUM_OF_TYPE and not layers.get(entry.name):
            continue  # e.g. Reshape (newer than V1): weights are matched by name, a layer without blobs need not be stored
        else:
            out = net.layers.add()
            out.CopyFrom(_v2_to_v1(entry, v1_class, prototxt))
        del out.blobs[:]
        out.blobs.extend(blobs)
    return net


def _v2_to_v1(entry, v1_class, prototxt):
    if entry.type not in _V1_ENUM_OF_TYPE:
        raise ConversionError(f"{prototxt}: layer {entry.name!r} of type {entry.type!r} has no V1 form; write layout='v2'")
    out = v1_class(name=entry.name, bottom=entry.bottom, top=entry.top)
    out.type = v1_class.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name[_V1_ENUM_OF_TYPE[entry.type]].number
    for rule in ("include", "exclude"):
        for r in getattr(entry, rule):
            getattr(out, rule).add().ParseFromString(r.SerializeToString())
    for fd, value in entry.ListFields():
        if fd.name.endswith("_param"):
            if fd.name not in v1_class.DESCRIPTOR.fields_by_name:
                raise ConversionError(f"{prototxt}: layer {entry.name!r}: {fd.name} has no V1 form; write layout='v2'")
            getattr(out, fd.name).ParseFromString(value.SerializeToString())
    return out


def _v1_to_v2(entry, layer_class):
    out = layer_class(name=entry.name, bottom=entry.bottom, top=entry.top)
    out.type = V1_TYPE_NAMES[enum_name("LayerType", entry.type)]
    for fd, value in entry.ListFields():
        if fd.name.endswith("_param") or fd.name in ("include", "exclude"):
            target = getattr(out, fd.name)
            if fd.name in ("include", "exclude"):
                for r in value:
                    target.add().ParseFromString(r.SerializeToString())
            else:
                target.ParseFromString(value.SerializeToString())
    return out


def _input_layer_to_fields(entry, net, prototxt) -> None:
    shapes = list(entry.input_param.shape)
    for i, top in enumerate(entry.top):
        shape = shapes[i] if len(shapes) > 1 else shapes[0]
        if len(shape.dim) != 4:
            raise ConversionError(f"{prototxt}: V1 input_dim needs 4-D inputs; {top!r} has {len(shape.dim)} dims")
        net.input.append(top)
        net.input_dim.extend(shape.dim)
