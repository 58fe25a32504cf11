"""Caffe network (prototxt + weights) → ONNX (opset 13), faithful to Caffe's forward pass.

Every Caffe blob becomes an ONNX value of the same name, and every one is a graph output, so any
blob can be tapped. Caffe's in-place layers (a ReLU whose top is its bottom) overwrite a blob; as
in Caffe, the value named `fc6` is the blob *after* all in-place layers (relu6), and earlier
versions are named `fc6@fc6` ("blob fc6 as layer fc6 left it"). Helper values are `layer#what`.

The batch dimension is dynamic ("N"); all other dimensions are fixed by the prototxt's input shape,
which is how Caffe works too (spatial sizes decide the fully connected weights' shapes).

Each layer type is one function below that (1) checks the layer's settings, (2) takes the layer's
weights, each blob matched once with its shape asserted against what the prototxt implies, and (3)
emits ONNX nodes. Unknown layer types and weights that do not fit raise `ConversionError`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from converters.caffe_net import Layer, NetDef, read_net
from converters.caffemodel import Weights, read_weights
from converters.errors import ConversionError
from converters.onnx_skeleton import weightless
from converters.provenance import file_record

OPSET = 13
IR_VERSION = 8  # the IR of opset 13's era; every onnxruntime since 1.10 reads it
BATCH = "N"
Shape = tuple  # (None, C, H, W): None is the dynamic batch

# Types that only exist for training; a deploy prototxt does not have them.
_TRAINING_TYPES = frozenset({
    "SoftmaxWithLoss", "EuclideanLoss", "Accuracy", "HingeLoss", "InfogainLoss", "ContrastiveLoss",
    "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "Silence", "HDF5Output",
})


@dataclass
class Conversion:
    """An ONNX model converted from Caffe, with what the caller needs to trust and use it."""

    model: onnx.ModelProto
    taps: list[str]  # Caffe blob names, in the order the network produces them (all graph outputs)
    shapes: dict[str, Shape]  # tap → shape, batch None
    input_name: str
    input_shape: Shape
    weights: Weights  # {layer: [blobs]} as used, in the shapes the prototxt implies (Caffe layout)
    unused_weights: list[str] = field(default_factory=list)  # caffemodel layers the prototxt lacks (Caffe ignores them too)


def convert_caffe(
    prototxt: str | Path,
    caffemodel: str | Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Conversion:
    """Read `prototxt` and `caffemodel` and convert them; the files' sha256 go into the metadata."""
    net = read_net(prototxt, input_shapes)
    weights = read_weights(caffemodel)
    sources = {"prototxt": file_record(prototxt), "caffemodel": file_record(caffemodel)}
    return caffe_to_onnx(net, weights, weights_source=f"caffemodel {caffemodel}", sources=sources)


WeightFactory = Callable[[Layer, list[tuple[str, tuple[int, ...]]]], Sequence[np.ndarray]]


def caffe_to_onnx(
    net: NetDef, weights: Weights | WeightFactory, weights_source: str = "the weights",
    sources: Mapping[str, object] | None = None,
) -> Conversion:
    """Convert a parsed network and its {layer: [blobs]} (from a caffemodel or a decoder).

    `weights` may also be a factory `(layer, [(role, shape), …]) → arrays`, asked once per layer
    with the blobs the prototxt implies (how tests draw random weights for an architecture).
    """
    builder = _Builder(net, weights, weights_source)
    for layer in net.layers:
        builder.add(layer)
    return builder.finish(sources or {})


def blob_shapes(net: NetDef) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """{layer: [(role, shape), …]}: the parameter blobs the prototxt implies, in caffemodel order."""
    shapes: dict[str, list[tuple[str, tuple[int, ...]]]] = {}

    def record(layer: Layer, expected: list[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
        shapes[layer.name] = expected
        return [np.broadcast_to(np.float32(1), s) for _, s in expected]

    caffe_to_onnx(net, record)
    return shapes


@dataclass(frozen=True)
class Value:
    name: str
    shape: Shape


class _Builder:
    def __init__(self, net: NetDef, weights: Weights, weights_source: str):
        self.net, self.weights, self.weights_source = net, weights, weights_source
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[tuple[str, np.ndarray]] = []
        self.used: Weights = {}
        self.taps: list[str] = []
        self.shapes: dict[str, Shape] = {}
        self.node_names: set[str] = set()
        if len(net.inputs) != 1:
            raise ConversionError(f"{net.path}: networks with {len(net.inputs)} inputs are not supported (one image input)")
        (self.input_name, declared), = net.inputs.items()
        if len(declared) < 2 or any(d <= 0 for d in declared):
            raise ConversionError(f"{net.path}: input {self.input_name!r} has an unusable shape {declared}")
        self.declared_batch = declared[0]
        self.input_shape: Shape = (None, *declared[1:])
        self.current: dict[str, Value] = {self.input_name: Value(self.input_name, self.input_shape)}
        # The layer that leaves each blob its final value (aliases such as in-place Dropout excluded).
        self.final_writer: dict[str, str] = {}
        for layer in net.layers:
            if not _is_alias(layer):
                for top in layer.tops:
                    if top == self.input_name:
                        raise ConversionError(f"{net.path}: layer {layer.name!r} writes into the network input {top!r}; not supported")
                    self.final_writer[top] = layer.name

    # -- plumbing ------------------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        where = f"{self.net.path}: layer {layer.name!r} ({layer.type})"
        if layer.type in _TRAINING_TYPES:
            raise ConversionError(f"{where} is a training-only layer; convert the deploy prototxt")
        convert = _CONVERTERS.get(layer.type)
        if convert is None:
            raise ConversionError(f"{where}: layer type {layer.type!r} is not supported by converters.caffe2onnx")
        inputs = []
        for bottom in layer.bottoms:
            if bottom not in self.current:
                raise ConversionError(f"{where} reads blob {bottom!r}, which no earlier layer produces")
            inputs.append(self.current[bottom])
        for top in layer.tops:
            if top in self.current and top not in layer.bottoms:  # Caffe: "produced by multiple sources"
                raise ConversionError(f"{where} writes blob {top!r}, which an earlier layer produces; Caffe rejects this too")
        outputs = [self._output_name(layer, top) for top in layer.tops]
        try:
            shapes = convert(self, layer, inputs, outputs)
        except ConversionError as err:
            raise ConversionError(f"{where}: {err}") from None
        for top, name, shape in zip(layer.tops, outputs, shapes):
            if any(d is not None and d <= 0 for d in shape):
                raise ConversionError(f"{where}: output {top!r} would have shape {shape}; the input is too small")
            self.current[top] = Value(name, shape)
            if name == top and not _is_alias(layer):
                self.taps.append(top)
                self.shapes[top] = shape

    def _output_name(self, layer: Layer, top: str) -> str:
        if _is_alias(layer):
            return top
        return top if self.final_writer.get(top) == layer.name else f"{top}@{layer.name}"

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs) -> None:
        name = name.replace(".", "_")  # onnx2torch makes node names into module names, which may not hold "."
        if name in self.node_names:
            raise ConversionError(f"two ONNX nodes would be named {name!r}; rename one of the Caffe layers")
        self.node_names.add(name)
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append((name, np.asarray(array, dtype="<f4")))
        return name

    def int_const(self, name: str, values: Sequence[int]) -> str:
        self.initializers.append((name, np.asarray(values, dtype="<i8")))
        return name

    def take(self, layer: Layer, expected: Sequence[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
        """The layer's blobs, each matched once to (role, shape the prototxt implies)."""
        expected = [(role, tuple(int(d) for d in shape)) for role, shape in expected]
        if callable(self.weights):  # a generator of weights (tests, shape listing): asked for exactly these
            self.used[layer.name] = [np.asarray(a, np.float32).reshape(s) for a, (_, s) in zip(self.weights(layer, expected), expected)]
            return self.used[layer.name]
        got = self.weights.get(layer.name)
        roles = ", ".join(role for role, _ in expected)
        if got is None:
            raise ConversionError(f"{self.weights_source} has no weights for this layer ({roles}); is it the caffemodel of this prototxt?")
        if len(got) != len(expected):
            raise ConversionError(
                f"{self.weights_source} holds {len(got)} blobs for this layer but the prototxt implies {len(expected)} ({roles})"
            )
        arrays = []
        for (role, shape), array in zip(expected, got):
            legacy = (1,) * (4 - len(shape)) + shape if len(shape) < 4 else None  # Caffe's num/channels/height/width
            if array.shape != shape and array.shape != legacy:
                raise ConversionError(
                    f"{role} blob in {self.weights_source} has shape {array.shape} but the prototxt implies {shape}; "
                    "is this the prototxt the weights were saved with?"
                )
            arrays.append(array.reshape(shape))
        self.used[layer.name] = arrays
        return arrays

    def finish(self, sources: Mapping[str, object]) -> Conversion:
        def dims(shape: Shape) -> list:
            return [BATCH if d is None else int(d) for d in shape]

        # Built in place rather than with helper.make_graph/make_model, which copy every weight twice.
        model = onnx.ModelProto(ir_version=IR_VERSION, producer_name="deepsim.converters.caffe2onnx")
        model.opset_import.add(domain="", version=OPSET)
        graph = model.graph
        graph.name = self.net.name or "caffe"
        graph.node.extend(self.nodes)
        graph.input.append(helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, dims(self.input_shape)))
        graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, dims(self.shapes[t])) for t in self.taps)
        for name, array in self.initializers:
            tensor = graph.initializer.add(name=name, dims=array.shape)
            tensor.data_type = TensorProto.INT64 if array.dtype.kind == "i" else TensorProto.FLOAT
            tensor.raw_data = np.ascontiguousarray(array).tobytes()
        helper.set_model_props(model, {
            "deepsim.taps": json.dumps(self.taps),
            "deepsim.sources": json.dumps(dict(sources)),
        })
        _check_structure(model)
        unused = [] if callable(self.weights) else sorted(set(self.weights) - set(self.used))
        return Conversion(model, list(self.taps), dict(self.shapes), self.input_name, self.input_shape, self.used, unused)


def _check_structure(model: onnx.ModelProto) -> None:
    """onnx.checker on the graph with its weights as typed inputs: the same checks of nodes,
    attributes and names, without serialising hundreds of MB of weights."""
    onnx.checker.check_model(weightless(model))


def _is_alias(layer: Layer) -> bool:
    """Layers that are the identity at inference; in place they emit nothing at all."""
    return layer.type == "Dropout" and layer.in_place


def _one(inputs: Sequence[Value], n: int = 1) -> Value:
    if len(inputs) != n:
        raise ConversionError(f"expects {n} bottom blob(s), got {len(inputs)}")
    return inputs[0]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ConversionError(f"axis {axis} is out of range for a {rank}-D blob")
    return axis % rank


def _pair(repeated: Sequence[int], h_set: bool, h: int, w: int, default: int | None, what: str) -> tuple[int, int]:
    """Caffe's 2-D geometry: `what_h`/`what_w`, else one or two values of the repeated field."""
    if h_set:
        return int(h), int(w)
    values = list(repeated)
    if not values:
        if default is None:
            raise ConversionError(f"{what} is not set")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ConversionError(f"{what} has {len(values)} values; only 2-D layers are supported")


# -- layer types ------------------------------------------------------------------------------------------
def _convolution(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    if len(x.shape) != 4 or _axis(p.axis, len(x.shape)) != 1:
        raise ConversionError(f"only 2-D convolutions over axis 1 of (N, C, H, W) blobs are supported, got {x.shape}")
    kh, kw = _pair(p.kernel_size, p.HasField("kernel_h") or p.HasField("kernel_w"), p.kernel_h, p.kernel_w, None, "kernel_size")
    sh, sw = _pair(p.stride, p.HasField("stride_h") or p.HasField("stride_w"), p.stride_h, p.stride_w, 1, "stride")
    ph, pw = _pair(p.pad, p.HasField("pad_h") or p.HasField("pad_w"), p.pad_h, p.pad_w, 0, "pad")
    dh, dw = _pair(p.dilation, False, 0, 0, 1, "dilation")
    channels, group, num_output = x.shape[1], p.group, p.num_output
    if num_output == 0 or group == 0 or channels % group or num_output % group:
        raise ConversionError(f"num_output {num_output} and {channels} input channels must be multiples of group {group}")
    deconv = layer.type == "Deconvolution"
    weight_shape = (channels, num_output // group, kh, kw) if deconv else (num_output, channels // group, kh, kw)
    expected = [("weight", weight_shape)] + ([("bias", (num_output,))] if p.bias_term else [])
    blobs = b.take(layer, expected)
    args = [x.name, b.const(f"{layer.name}#weight", blobs[0])]
    if p.bias_term:
        args.append(b.const(f"{layer.name}#bias", blobs[1]))
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], dilations=[dh, dw], group=group)
    h, w = x.shape[2:]
    if deconv:  # Caffe: (H - 1)·s + d·(k - 1) + 1 − 2p
        out_h, out_w = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph, sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw
        b.node("ConvTranspose", args, outputs, layer.name, **attrs)
    else:  # floor((H + 2p − d·(k − 1) − 1) / s) + 1, as ONNX
        out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        b.node("Conv", args, outputs, layer.name, **attrs)
    return [(None, num_output, out_h, out_w)]


def _inner_product(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    if _axis(p.axis, len(x.shape)) != 1:
        raise ConversionError("only InnerProduct over axis 1 (all but the batch) is supported")
    features = math.prod(x.shape[1:])
    weight_shape = (features, p.num_output) if p.transpose else (p.num_output, features)
    expected = [("weight", weight_shape)] + ([("bias", (p.num_output,))] if p.bias_term else [])
    blobs = b.take(layer, expected)
    weight = blobs[0].T if p.transpose else blobs[0]  # ONNX Gemm takes (out, in) with transB=1
    bias = blobs[1] if p.bias_term else np.zeros(p.num_output, np.float32)  # Caffe: no bias term = zero bias
    flat = x.name
    if len(x.shape) > 2:
        flat = f"{layer.name}#flatten"
        b.node("Flatten", [x.name], [flat], flat, axis=1)
    b.node("Gemm", [flat, b.const(f"{layer.name}#weight", weight), b.const(f"{layer.name}#bias", bias)], outputs,
           layer.name, transB=1)
    return [(None, p.num_output)]


def _pooling(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    if len(x.shape) != 4:
        raise ConversionError(f"pooling needs an (N, C, H, W) blob, got {x.shape}")
    method = {0: "MAX", 1: "AVE"}.get(p.pool)
    if method is None:
        raise ConversionError("only MAX and AVE pooling are supported (STOCHASTIC is not)")
    h, w = x.shape[2:]
    if p.global_pooling:
        (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
    else:
        kh, kw = _pair([p.kernel_size] if p.HasField("kernel_size") else [], p.HasField("kernel_h") or p.HasField("kernel_w"),
                       p.kernel_h, p.kernel_w, None, "kernel_size")
        sh, sw = _pair([p.stride], p.HasField("stride_h") or p.HasField("stride_w"), p.stride_h, p.stride_w, 1, "stride")
        ph, pw = _pair([p.pad], p.HasField("pad_h") or p.HasField("pad_w"), p.pad_h, p.pad_w, 0, "pad")
    if ph >= kh or pw >= kw:
        raise ConversionError(f"pad ({ph}, {pw}) must be smaller than the kernel ({kh}, {kw}), as Caffe requires")
    ceil = p.round_mode == 0
    out_h, out_w = caffe_pooled_size(h, kh, sh, ph, ceil), caffe_pooled_size(w, kw, sw, pw, ceil)
    # Caffe rounds the output size up; ONNX rounds down. Extra padding at the end gives ONNX
    # Caffe's size: −inf padding for max (ignored), and for average see below.
    extra_h = max(0, (out_h - 1) * sh + kh - (h + 2 * ph))
    extra_w = max(0, (out_w - 1) * sw + kw - (w + 2 * pw))
    if method == "MAX":
        b.node("MaxPool", [x.name], outputs, layer.name, kernel_shape=[kh, kw], strides=[sh, sw],
               pads=[ph, pw, ph + extra_h, pw + extra_w])
    elif p.global_pooling:
        b.node("GlobalAveragePool", [x.name], outputs, layer.name)
    elif not extra_h and not extra_w:  # every window lies within the padded input: Caffe divides by kh·kw
        b.node("AveragePool", [x.name], outputs, layer.name, kernel_shape=[kh, kw], strides=[sh, sw],
               pads=[ph, pw, ph, pw], count_include_pad=1)
    else:
        # Caffe divides each window's sum by its size clipped to the padded input (H + 2p), not by
        # kh·kw and not by the count of real pixels. Zero-pad explicitly (sums are unchanged), average
        # over full windows, then rescale each output position by kh·kw / Caffe's divisor.
        padded, pooled = f"{layer.name}#pad", f"{layer.name}#sum"
        pads = b.int_const(f"{layer.name}#pads", [0, 0, ph, pw, 0, 0, ph + extra_h, pw + extra_w])
        b.node("Pad", [x.name, pads], [padded], padded, mode="constant")
        b.node("AveragePool", [padded], [pooled], pooled, kernel_shape=[kh, kw], strides=[sh, sw])
        rescale = np.outer(_caffe_window_sizes(h, kh, sh, ph, out_h), _caffe_window_sizes(w, kw, sw, pw, out_w))
        rescale = (kh * kw / rescale)[None, None].astype(np.float32)
        b.node("Mul", [pooled, b.const(f"{layer.name}#rescale", rescale)], outputs, layer.name)
    return [(None, x.shape[1], out_h, out_w)]


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's pooling output size: rounds up (CEIL), then drops a window that starts in the padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _caffe_window_sizes(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Caffe's AVE divisor along one axis: window length clipped to [−pad, size + pad)."""
    start = np.arange(out) * stride - pad
    return (np.minimum(start + kernel, size + pad) - start).astype(np.float64)


def _relu(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    slope = layer.param.negative_slope
    if slope:
        b.node("LeakyRelu", [x.name], outputs, layer.name, alpha=float(slope))
    else:
        b.node("Relu", [x.name], outputs, layer.name)
    return [x.shape]


def _elementwise(op: str) -> Callable:
    def convert(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
        x = _one(inputs)
        b.node(op, [x.name], outputs, layer.name)
        return [x.shape]
    return convert


def _lrn(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    if p.local_size % 2 == 0:
        raise ConversionError(f"local_size must be odd (Caffe requires it), got {p.local_size}")
    if p.norm_region == 0:
        # ACROSS_CHANNELS: x / (k + α/n · Σ x²)^β over n channels centred on c — ONNX LRN exactly.
        b.node("LRN", [x.name], outputs, layer.name, size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k)
        return [x.shape]
    # WITHIN_CHANNEL: Caffe composes x · (1 + α · avgpool_n×n(x²))^−β with stride 1 and pad (n−1)/2,
    # where every window lies within the padded input, so the average divides by n² (k is unused).
    n, pad = p.local_size, (p.local_size - 1) // 2
    name = layer.name
    b.node("Mul", [x.name, x.name], [f"{name}#square"], f"{name}#square")
    b.node("AveragePool", [f"{name}#square"], [f"{name}#mean"], f"{name}#mean", kernel_shape=[n, n], strides=[1, 1],
           pads=[pad] * 4, count_include_pad=1)
    b.node("Mul", [f"{name}#mean", b.const(f"{name}#alpha", np.float32(p.alpha))], [f"{name}#scaled"], f"{name}#scaled")
    b.node("Add", [f"{name}#scaled", b.const(f"{name}#one", np.float32(1.0))], [f"{name}#base"], f"{name}#base")
    b.node("Pow", [f"{name}#base", b.const(f"{name}#power", np.float32(-p.beta))], [f"{name}#factor"], f"{name}#factor")
    b.node("Mul", [x.name, f"{name}#factor"], outputs, name)
    return [x.shape]


def _dropout(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    """Dropout is the identity at inference (Caffe scales at training time)."""
    x = _one(inputs)
    if not layer.in_place:
        b.node("Identity", [x.name], outputs, layer.name)
    return [x.shape]


def _split(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    for i, out in enumerate(outputs):
        b.node("Identity", [x.name], [out], f"{layer.name}#{i}")
    return [x.shape] * len(outputs)


def _softmax(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    axis = _axis(layer.param.axis, len(x.shape))
    if axis == 0:
        raise ConversionError("softmax over the batch axis is not supported")
    b.node("Softmax", [x.name], outputs, layer.name, axis=axis)  # opset 13: over this one axis, as Caffe
    return [x.shape]


def _concat(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    if not inputs:
        raise ConversionError("has no bottom blobs")
    p = layer.param
    rank = len(inputs[0].shape)
    axis = _axis(p.concat_dim if p.HasField("concat_dim") else p.axis, rank)
    if axis == 0:
        raise ConversionError("concatenation along the batch axis is not supported")
    for v in inputs:
        if len(v.shape) != rank or any(a != c for i, (a, c) in enumerate(zip(v.shape, inputs[0].shape)) if i != axis):
            raise ConversionError(f"bottom shapes {[v.shape for v in inputs]} differ outside axis {axis}")
    b.node("Concat", [v.name for v in inputs], outputs, layer.name, axis=axis)
    shape = list(inputs[0].shape)
    shape[axis] = sum(v.shape[axis] for v in inputs)
    return [tuple(shape)]


def _flatten(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    rank = len(x.shape)
    start, end = _axis(layer.param.axis, rank), _axis(layer.param.end_axis, rank)
    if end < start:
        raise ConversionError(f"end_axis {layer.param.end_axis} comes before axis {layer.param.axis}")
    if start == 0:
        raise ConversionError("flattening the batch axis is not supported")
    shape = (*x.shape[:start], math.prod(x.shape[start : end + 1]), *x.shape[end + 1 :])
    if start == 1 and end == rank - 1:
        b.node("Flatten", [x.name], outputs, layer.name, axis=1)
    else:  # 0 keeps a dimension as it is (the batch and the leading axes)
        target = b.int_const(f"{layer.name}#shape", [0] * start + list(shape[start:]))
        b.node("Reshape", [x.name, target], outputs, layer.name)
    return [shape]


def _reshape(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    rank = len(x.shape)
    axis = p.axis if p.axis >= 0 else rank + 1 + p.axis  # Caffe: −1 means "after the last axis"
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if not 0 <= axis <= end <= rank:
        raise ConversionError(f"axis {p.axis} / num_axes {p.num_axes} do not fit a {rank}-D blob")
    spec = [int(d) for d in p.shape.dim]
    if spec.count(-1) > 1:
        raise ConversionError("at most one dimension may be -1")
    if axis == 0 and spec and spec[0] > 0:
        # A literal batch (often `dim: 1`) ties the net to one batch size. When the per-sample
        # layout is unchanged, read it as "the batch" so the batch stays dynamic.
        if spec[0] != b.declared_batch or (-1 not in spec[1:] and math.prod(spec[1:]) != math.prod(x.shape[1:])):
            raise ConversionError(f"reshape to {spec} changes the batch size; use 0 or -1 as the first dimension")
        spec[0] = 0
    out: list = list(x.shape[:axis])
    for i, d in enumerate(spec):
        if d == 0 and axis + i >= end:
            raise ConversionError(f"dimension {i} of {spec} copies an input axis outside the reshaped range")
        out.append(x.shape[axis + i] if d == 0 else d)
    out += list(x.shape[end:])
    if -1 in out:  # infer from the per-sample count; the batch stays what it is
        known = math.prod(d for d in out[1:] if d not in (-1, None))
        total = math.prod(x.shape[1:])
        if out[0] == -1:
            if total % known:
                raise ConversionError(f"cannot reshape {x.shape} to {spec}")
            out[0] = None
        else:
            if total % known:
                raise ConversionError(f"cannot reshape {x.shape} to {spec}")
            out[out.index(-1)] = total // known
    if math.prod(out[1:]) != math.prod(x.shape[1:]) or out[0] is not None:
        raise ConversionError(f"cannot reshape {x.shape} to {spec} without changing the batch")
    target = [0] * axis + spec + [int(d) for d in x.shape[end:]]
    b.node("Reshape", [x.name, b.int_const(f"{layer.name}#shape", target)], outputs, layer.name)
    return [tuple(out)]


def _eltwise(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    if len(inputs) < 2:
        raise ConversionError("needs at least two bottom blobs")
    if any(v.shape != inputs[0].shape for v in inputs):
        raise ConversionError(f"bottom shapes differ: {[v.shape for v in inputs]}")
    p = layer.param
    names = [v.name for v in inputs]
    if p.coeff and p.operation != 1:
        raise ConversionError("coeff is only allowed for SUM, as in Caffe")
    if p.operation == 1:  # SUM, with optional per-blob coefficients
        coeffs = list(p.coeff) or [1.0] * len(inputs)
        if len(coeffs) != len(inputs):
            raise ConversionError(f"has {len(coeffs)} coeff values for {len(inputs)} bottoms")
        for i, c in enumerate(coeffs):
            if c != 1.0:
                scaled = f"{layer.name}#scaled{i}"
                b.node("Mul", [names[i], b.const(f"{layer.name}#coeff{i}", np.float32(c))], [scaled], scaled)
                names[i] = scaled
        b.node("Sum", names, outputs, layer.name)
    elif p.operation == 0:  # PROD
        product = names[0]
        for i, name in enumerate(names[1:], 1):
            out = outputs if i == len(names) - 1 else [f"{layer.name}#prod{i}"]
            b.node("Mul", [product, name], out, layer.name if out is outputs else out[0])
            product = out[0]
    else:
        b.node("Max", names, outputs, layer.name)
    return [inputs[0].shape]


def _batch_norm(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    x = _one(inputs)
    p = layer.param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise ConversionError("use_global_stats: false normalises with batch statistics at inference; set it true or remove it")
    channels = x.shape[1]
    mean, var, factor = b.take(layer, [("mean", (channels,)), ("variance", (channels,)), ("scale factor", (1,))])
    # Caffe stores running sums and their weight; the statistics are sum / factor (0 if factor is 0).
    scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    args = [x.name, b.const(f"{layer.name}#gamma", np.ones(channels)), b.const(f"{layer.name}#beta", np.zeros(channels)),
            b.const(f"{layer.name}#mean", mean * scale), b.const(f"{layer.name}#variance", var * scale)]
    b.node("BatchNormalization", args, outputs, layer.name, epsilon=float(p.eps))
    return [x.shape]


def _scale(b: _Builder, layer: Layer, inputs: list[Value], outputs: list[str]) -> list[Shape]:
    if len(inputs) != 1:
        raise ConversionError("only Scale with learned parameters (one bottom) is supported")
    x = inputs[0]
    p = layer.param
    axis = _axis(p.axis, len(x.shape))
    end = len(x.shape) if p.num_axes == -1 else axis + p.num_axes
    if axis == 0 or end > len(x.shape):
        raise ConversionError(f"axis {p.axis} / num_axes {p.num_axes} do not fit {x.shape} (the batch axis cannot be scaled)")
    shape = tuple(x.shape[axis:end])
    blobs = b.take(layer, [("scale", shape)] + ([("bias", shape)] if p.bias_term else []))
    broadcast = shape + (1,) * (len(x.shape) - end)  # numpy-style broadcasting aligns trailing axes
    scaled = outputs[0] if not p.bias_term else f"{layer.name}#scaled"
    b.node("Mul", [x.name, b.const(f"{layer.name}#scale", blobs[0].reshape(broadcast))], [scaled],
           layer.name if not p.bias_term else scaled)
    if p.bias_term:
        b.node("Add", [scaled, b.const(f"{layer.name}#bias", blobs[1].reshape(broadcast))], outputs, layer.name)
    return [x.shape]


# Caffe layer type → converter. Everything else raises ConversionError.
_CONVERTERS: dict[str, Callable[[_Builder, Layer, list[Value], list[str]], list[Shape]]] = {
    "Convolution": _convolution,
    "Deconvolution": _convolution,
    "InnerProduct": _inner_product,
    "Pooling": _pooling,
    "ReLU": _relu,
    "Sigmoid": _elementwise("Sigmoid"),
    "TanH": _elementwise("Tanh"),
    "LRN": _lrn,
    "Dropout": _dropout,
    "Split": _split,
    "Softmax": _softmax,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Eltwise": _eltwise,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
}
SUPPORTED_LAYER_TYPES = frozenset(_CONVERTERS)
