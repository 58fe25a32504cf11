"""A Caffe network definition as a flat list of layers, whatever layout its prototxt uses.

`read_net` parses a prototxt (current `layer` or legacy V1 `layers`), keeps the layers Caffe would
instantiate in the TEST phase, gives V1 enum types their current string names, and collects the
network inputs (top-level `input`/`input_shape`/`input_dim`, `Input` and `MemoryData` layers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from converters.caffe_proto import PARAM_MESSAGES, V1_TYPE_NAMES, enum_name, message_class, parse_prototxt
from converters.errors import ConversionError

# Layer type → the field of LayerParameter that holds its settings.
PARAM_FIELDS: dict[str, str] = {
    "Convolution": "convolution_param", "Deconvolution": "convolution_param",
    "InnerProduct": "inner_product_param", "Pooling": "pooling_param", "ReLU": "relu_param",
    "LRN": "lrn_param", "Dropout": "dropout_param", "Softmax": "softmax_param", "Concat": "concat_param",
    "Flatten": "flatten_param", "Reshape": "reshape_param", "Eltwise": "eltwise_param",
    "BatchNorm": "batch_norm_param", "Scale": "scale_param", "Input": "input_param",
    "MemoryData": "memory_data_param", "Data": "data_param",
}
# Layers that only feed data in; their first top is a network input.
DATA_LAYERS = frozenset({"Input", "MemoryData", "Data", "ImageData", "WindowData", "HDF5Data", "DummyData"})


@dataclass(frozen=True)
class Layer:
    """One Caffe layer: its name, type string, blob names and type-specific settings message."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    param: Any  # e.g. a caffe.ConvolutionParameter; None for layers without settings

    @property
    def in_place(self) -> bool:
        return len(self.tops) == 1 and self.tops == self.bottoms


@dataclass
class NetDef:
    """A network definition: inputs (blob → shape, batch first) and layers in execution order."""

    path: Path
    name: str
    inputs: dict[str, tuple[int, ...]]
    layers: list[Layer] = field(default_factory=list)


def read_net(prototxt: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None) -> NetDef:
    """Parse `prototxt`; `input_shapes` overrides or supplies input shapes (needed for `Data` layers)."""
    path = Path(prototxt)
    proto = parse_prototxt(path)
    inputs, layers = _inputs_and_layers(proto, path)
    for blob, shape in (input_shapes or {}).items():
        if blob not in inputs:
            raise ConversionError(f"{path}: input_shapes names {blob!r}, but the network's inputs are {sorted(inputs)}")
        inputs[blob] = tuple(int(d) for d in shape)
    for blob, shape in inputs.items():
        if shape is None:
            raise ConversionError(
                f"{path}: the shape of input {blob!r} is not stated (a Data layer); pass it with input_shapes={{{blob!r}: (N, C, H, W)}}"
            )
    if not inputs:
        raise ConversionError(f"{path} declares no input (no `input:`, Input or MemoryData layer)")
    return NetDef(path=path, name=proto.name, inputs=inputs, layers=layers)


def declared_inputs(prototxt: str | Path) -> dict[str, tuple[int, ...] | None]:
    """Input blob → shape as the prototxt states it (None where a Data layer leaves it to the database)."""
    path = Path(prototxt)
    return _inputs_and_layers(parse_prototxt(path), path)[0]


def _inputs_and_layers(proto: Any, path: Path) -> tuple[dict[str, tuple[int, ...] | None], list[Layer]]:
    if proto.layer and proto.layers:
        raise ConversionError(f"{path} mixes current `layer` and legacy V1 `layers` entries; Caffe rejects this too")
    inputs = _top_level_inputs(proto, path)
    layers: list[Layer] = []
    seen: set[str] = set()
    for entry in proto.layer or proto.layers:
        if not _included(entry, proto.state):
            continue
        layer = _layer(entry, legacy=not proto.layer, path=path)
        if layer.name in seen:
            raise ConversionError(f"{path}: two layers are named {layer.name!r}; weights are matched by name, so names must be unique")
        seen.add(layer.name)
        if layer.type in DATA_LAYERS:
            inputs.update(_data_layer_inputs(layer, path))
            continue
        layers.append(layer)
    return inputs, layers


def _top_level_inputs(proto: Any, path: Path) -> dict[str, tuple[int, ...] | None]:
    names = list(proto.input)
    if proto.input_shape:
        if len(proto.input_shape) != len(names):
            raise ConversionError(f"{path}: {len(names)} inputs but {len(proto.input_shape)} input_shape entries")
        return {name: tuple(int(d) for d in shape.dim) for name, shape in zip(names, proto.input_shape)}
    if proto.input_dim:
        if len(proto.input_dim) != 4 * len(names):
            raise ConversionError(f"{path}: input_dim must list 4 numbers per input; got {len(proto.input_dim)} for {len(names)}")
        dims = list(proto.input_dim)
        return {name: tuple(dims[4 * i : 4 * i + 4]) for i, name in enumerate(names)}
    return {name: None for name in names}


def _data_layer_inputs(layer: Layer, path: Path) -> dict[str, tuple[int, ...] | None]:
    if not layer.tops:
        raise ConversionError(f"{path}: data layer {layer.name!r} has no top blob")
    if layer.type == "Input":
        shapes = [tuple(int(d) for d in s.dim) for s in layer.param.shape]
        if not shapes:
            return {top: None for top in layer.tops}
        if len(shapes) not in (1, len(layer.tops)):
            raise ConversionError(f"{path}: Input layer {layer.name!r} has {len(layer.tops)} tops but {len(shapes)} shapes")
        return {top: shapes[i if len(shapes) > 1 else 0] for i, top in enumerate(layer.tops)}
    if layer.type == "MemoryData":
        p = layer.param
        return {layer.tops[0]: (p.batch_size, p.channels, p.height, p.width)}
    return {layer.tops[0]: None}  # Data, ImageData, …: channels are in the database, not the prototxt


def _layer(entry: Any, legacy: bool, path: Path) -> Layer:
    if legacy:
        if entry.HasField("layer"):
            raise ConversionError(f"{path}: layer {entry.name!r} uses the V0 format (before 2014); upgrade it with Caffe's upgrade_net_proto_text")
        try:
            type_name = V1_TYPE_NAMES[enum_name("LayerType", entry.type)]
        except KeyError:
            raise ConversionError(f"{path}: layer {entry.name!r} has V1 type number {entry.type}, which Caffe does not define") from None
    else:
        type_name = entry.type
    if not entry.name:
        raise ConversionError(f"{path}: a layer of type {type_name!r} has no name")
    param_field = PARAM_FIELDS.get(type_name)
    param = None
    if param_field in type(entry).DESCRIPTOR.fields_by_name:
        param = getattr(entry, param_field)
    elif param_field:  # V1 layers have no field for newer settings (Flatten): Caffe's defaults apply
        param = message_class(PARAM_MESSAGES[param_field])()
    return Layer(entry.name, type_name, tuple(entry.bottom), tuple(entry.top), param)


def _included(entry: Any, state: Any) -> bool:
    """Caffe's StateMeetsRule: include/exclude rules against the net state (TEST phase by default)."""
    def meets(rule: Any) -> bool:
        if rule.HasField("phase") and rule.phase != state.phase:
            return False
        if rule.HasField("min_level") and state.level < rule.min_level:
            return False
        if rule.HasField("max_level") and state.level > rule.max_level:
            return False
        stages = set(state.stage)
        return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)

    if entry.include:
        return any(meets(rule) for rule in entry.include)
    return not any(meets(rule) for rule in entry.exclude)
