"""ONNX → PyTorch through onnx2torch, with feature taps by blob name.

`prepare_onnx` makes ONNX files onnx2torch can take and that keep the batch dynamic:
- Dropout becomes Identity (inference), before anything else, so old Dropout versions never matter;
- constructs onnx2torch refuses (asymmetric AveragePool pads, auto_pad SAME, GlobalMaxPool, ImageScaler)
  are rewritten into equivalent ops (`converters.onnx_rewrites`);
- the opset is upgraded with `onnx.version_converter` when a node's version is one onnx2torch does
  not register (it matches exact versions: MaxPool 8/10/11/12, Gemm 9/11/13, LRN 1/13, …);
- a Reshape that hard-codes batch 1 (the model zoo's `[1, 9216]` before fc6) copies the batch instead,
  and the input/output batch dimension becomes symbolic.

Taps: `TappedOnnxNet` converts the part of the graph that the requested taps need (nodes that no
tap depends on are cut, with their weights), then, per tap, builds a torch.fx graph of only that
tap's ancestors. `net(x, tap)` therefore computes nothing past `tap`. The truncated graphs share the
converted modules (and so the weights) of the one full graph.

Speed: ONNX shape inference serialises the whole model, weights included (hundreds of MB for
CaffeNet). We infer shapes on a weight-free skeleton (large initializers become typed inputs) and
hand the result to onnx2torch in place of its own full-model inference.
"""
from __future__ import annotations

import contextlib
import json
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
import onnx2torch
import onnx2torch.converter
import torch
from onnx import numpy_helper, version_converter
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from torch import fx, nn

from converters.errors import ConversionError
from converters.onnx_rewrites import rewrite_for_onnx2torch
from converters.onnx_skeleton import value_shapes

TARGET_OPSET = 13


def prepare_onnx(model: onnx.ModelProto, source: str = "the ONNX model") -> onnx.ModelProto:
    """A copy of `model` ready for onnx2torch with a dynamic batch (see the module docstring)."""
    model = _copy(model)
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(real_inputs) != len(graph.input):  # IR 3 lists the weights as inputs too; IR 4 does not need to
        del graph.input[:]
        graph.input.extend(real_inputs)
        model.ir_version = max(model.ir_version, 4)
    if len(real_inputs) != 1:
        raise ConversionError(f"{source} has {len(real_inputs)} inputs; only single-input image networks are supported")
    _dropout_to_identity(model, source)
    rewrite_for_onnx2torch(model)  # ops onnx2torch refuses → equivalent ones it takes (converters.onnx_rewrites)
    _upgrade_if_needed(model, source)
    _make_batch_dynamic(model)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ConversionError("the model imports no default ONNX opset")
    return versions[0]


def _dropout_to_identity(model: onnx.ModelProto, source: str) -> None:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type != "Dropout":
            continue
        if len(node.output) > 1 and node.output[1] and node.output[1] in used:
            raise ConversionError(f"{source}: Dropout {node.name!r} has its mask used; cannot remove it")
        data = node.input[0]
        output = node.output[0]
        node.Clear()
        node.CopyFrom(onnx.helper.make_node("Identity", [data], [output], name=f"{output}#identity"))


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose (op, version at the model's opset) onnx2torch has no converter for."""
    opset = _opset(model)
    missing = []
    for node in model.graph.node:
        try:
            since = onnx.defs.get_schema(node.op_type, max_inclusive_version=opset, domain=node.domain).since_version
        except onnx.defs.SchemaError:
            since = opset
        if OperationDescription(node.domain or "", node.op_type, since) not in _CONVERTER_REGISTRY:
            missing.append(f"{node.op_type}-{since}")
    return sorted(set(missing))


def _upgrade_if_needed(model: onnx.ModelProto, source: str) -> None:
    missing = unsupported_nodes(model)
    if not missing:
        return
    if _opset(model) < TARGET_OPSET:
        try:
            upgraded = version_converter.convert_version(model, TARGET_OPSET)
        except Exception as err:  # the converter raises bare RuntimeErrors from C++
            raise ConversionError(
                f"{source}: onnx2torch lacks {missing} at opset {_opset(model)} and onnx.version_converter "
                f"could not upgrade it to {TARGET_OPSET}: {err}"
            ) from err
        try:
            onnx.checker.check_model(upgraded)
        except onnx.checker.ValidationError as err:
            raise ConversionError(f"{source}: the opset-{TARGET_OPSET} upgrade is not a valid model: {err}") from err
        model.CopyFrom(upgraded)
        missing = unsupported_nodes(model)
    if missing:
        raise ConversionError(f"{source}: onnx2torch 1.5.15 has no converter for {missing} (opset {_opset(model)})")


def _make_batch_dynamic(model: onnx.ModelProto) -> None:
    graph = model.graph
    inp = graph.input[0]
    first = inp.type.tensor_type.shape.dim[0] if inp.type.tensor_type.shape.dim else None
    fixed_batch = first.dim_value if first is not None and first.HasField("dim_value") else None
    if fixed_batch is not None:
        # Reshapes that hard-code that batch (zoo CaffeNet: [1, 9216]) copy the input's batch instead.
        shapes = value_shapes(model)
        constants = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type != "Reshape" or node.input[1] not in constants:
                continue
            target = numpy_helper.to_array(constants[node.input[1]])
            data_shape = shapes[node.input[0]].type.tensor_type.shape if node.input[0] in shapes else None
            data_batch = data_shape.dim[0].dim_value if data_shape is not None and data_shape.dim else None
            if target.size and target[0] == fixed_batch and data_batch == fixed_batch:
                dynamic = target.copy()
                dynamic[0] = 0  # ONNX Reshape: 0 copies the input's dimension
                new_name = f"{node.input[1]}#dynamic_batch"
                graph.initializer.append(numpy_helper.from_array(dynamic.astype(np.int64), new_name))
                node.input[1] = new_name
        for value in [*graph.input, *graph.output]:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == fixed_batch:
                dims[0].Clear()
                dims[0].dim_param = "N"
    del graph.value_info[:]  # stale shapes; onnx2torch infers them again


@contextlib.contextmanager
def _onnx2torch_shapes_from(shapes: dict[str, onnx.ValueInfoProto]) -> Iterator[None]:
    """Let onnx2torch 1.5.15 use our weight-free shape inference instead of its full-model one."""
    original = onnx2torch.converter.safe_shape_inference

    def with_known_shapes(model: onnx.ModelProto, **kwargs) -> onnx.ModelProto:
        graph_values = {v.name for v in [*model.graph.input, *model.graph.output]}
        node_values = {o for node in model.graph.node for o in node.output}
        del model.graph.value_info[:]
        model.graph.value_info.extend(v for name, v in shapes.items() if name in node_values and name not in graph_values)
        return model

    onnx2torch.converter.safe_shape_inference = with_known_shapes
    try:
        yield
    finally:
        onnx2torch.converter.safe_shape_inference = original


def extract(model: onnx.ModelProto, outputs: Sequence[str], shapes: dict[str, onnx.ValueInfoProto]) -> onnx.ModelProto:
    """The sub-model computing `outputs` (typed from `shapes`) from the input; nodes no output
    depends on are dropped with their weights. (onnx.utils.Extractor does the same but first runs
    shape inference over all the weights.)"""
    needed, kept = set(outputs), []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    if len(kept) == len(model.graph.node) and [o.name for o in model.graph.output] == list(outputs):
        return model  # nothing to cut
    cut = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    cut.opset_import.extend(model.opset_import)
    cut.metadata_props.extend(model.metadata_props)
    graph = cut.graph
    graph.name = model.graph.name
    graph.node.extend(reversed(kept))
    graph.input.extend(model.graph.input)
    graph.initializer.extend(t for t in model.graph.initializer if t.name in needed)
    graph.output.extend(shapes[name] if name in shapes else onnx.ValueInfoProto(name=name) for name in outputs)
    return cut


def _node_outputs(model: onnx.ModelProto) -> list[str]:
    return [o for node in model.graph.node for o in node.output if o]


def _check_taps(model: onnx.ModelProto, taps: Sequence[str], source: str) -> None:
    produced = set(_node_outputs(model))
    unknown = [t for t in taps if t not in produced]
    if unknown:
        known = ", ".join(default_taps(model)[:40])
        raise ConversionError(f"{source} has no blob(s) {unknown}; taps it has: {known}")


def default_taps(model: onnx.ModelProto) -> list[str]:
    """Taps of an ONNX model: those our Caffe converter recorded, else every value a node produces."""
    props = {p.key: p.value for p in model.metadata_props}
    if "deepsim.taps" in props:
        return json.loads(props["deepsim.taps"])
    return _node_outputs(model)


class TappedOnnxNet(nn.Module):
    """A converted network whose forward stops at a named blob.

    `forward(x, tap)`: x is the network's raw input (for CaffeNet: (B, 3, 227, 227) BGR 0–255 minus
    the mean); returns blob `tap` and computes nothing beyond it. `taps` lists the blob names in the
    order the network produces them; `shapes[tap]` is the blob's shape (batch None). `transform` is the
    network's own input transform (a module: the caller's images → raw input), given at construction because
    the preprocessing belongs to the network; identity when none is given (the caller hands raw input).
    """

    def __init__(self, model: onnx.ModelProto, taps: Sequence[str] | None = None, source: str = "the ONNX model",
                 transform: nn.Module | None = None):
        super().__init__()
        if taps is not None:
            _check_taps(model, taps, source)  # before the (slow) preparation
        model = prepare_onnx(model, source)
        available = default_taps(model) if taps is None else list(taps)
        _check_taps(model, available, source)
        input_name = model.graph.input[0].name
        shapes = value_shapes(model)
        model = extract(model, available, shapes)
        try:
            with _onnx2torch_shapes_from(shapes):
                self.graph = onnx2torch.convert(model, attach_onnx_mapping=True)
        except NotImplementedError as err:
            raise ConversionError(f"{source}: onnx2torch cannot convert it: {err}") from err
        self.graph.eval()
        self.taps: tuple[str, ...] = tuple(available)
        self.shapes: dict[str, tuple] = {t: _shape(shapes[t].type.tensor_type.shape if t in shapes else None) for t in self.taps}
        self.input_name = input_name
        self.input_shape = _shape(model.graph.input[0].type.tensor_type.shape)
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self._producer = self._find_producers()
        self.transform = nn.Identity() if transform is None else transform
        object.__setattr__(self, "_truncated", {})  # not submodules: they share self.graph's modules

    def _find_producers(self) -> dict[str, tuple[str, int | None]]:
        """tap → (name of the fx node whose onnx2torch module computes it, output index if several).
        Names, not nodes: a deep-copied or unpickled module has new node objects."""
        producers = {}
        for node in self.graph.graph.nodes:
            if node.op != "call_module":
                continue
            mapping = getattr(self.graph.get_submodule(node.target), "onnx_mapping", None)
            outputs = [o for o in (mapping.outputs if mapping else ()) if o]
            for i, name in enumerate(outputs):
                producers[name] = (node.name, i if len(outputs) > 1 else None)
        missing = [t for t in self.taps if t not in producers]
        if missing:
            raise ConversionError(f"taps {missing} have no module in the converted graph")
        return producers

    def _truncated_graph(self, taps: tuple[str, ...]) -> fx.GraphModule:
        cached = self._truncated.get(taps)
        if cached is not None:
            return cached
        nodes = {node.name: node for node in self.graph.graph.nodes}
        needed, stack = set(), [nodes[self._producer[t][0]] for t in taps]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                stack.extend(node.all_input_nodes)
        graph, env = fx.Graph(), {}
        for node in self.graph.graph.nodes:
            if node in needed:
                env[node] = graph.node_copy(node, lambda n: env[n])
        outs = []
        for tap in taps:
            name, index = self._producer[tap]
            node = env[nodes[name]]
            outs.append(node if index is None else graph.call_function(_getitem, (node, index)))
        graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        module = fx.GraphModule(self.graph, graph)
        self._truncated[taps] = module
        return module

    def _check(self, taps: Iterable[str]) -> None:
        for tap in taps:
            if tap not in self._producer:
                raise ValueError(f"unknown tap {tap!r}; this network has {', '.join(self.taps)}")

    def forward(self, x: torch.Tensor, tap: str) -> torch.Tensor:
        self._check([tap])
        return self._truncated_graph((tap,))(x)

    def features(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
        """{tap: blob} for several taps in one pass that stops at the deepest one."""
        taps = tuple(taps)
        self._check(taps)
        out = self._truncated_graph(taps)(x)
        return dict(zip(taps, out if len(taps) > 1 else (out,)))

    def _apply(self, fn, *args, **kwargs):
        # .to()/.half() may replace buffers (onnx2torch's constants); rebuild the truncated graphs from
        # the moved modules rather than keep references to the old tensors.
        self._truncated.clear()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_truncated"] = {}  # rebuilt on demand (deepcopy, pickle)
        return state

    def extra_repr(self) -> str:
        return f"input={self.input_name} {self.input_shape}, taps={list(self.taps)}"


def _getitem(value, index: int):
    return value[index]


def _shape(shape_proto) -> tuple:
    if shape_proto is None:
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in shape_proto.dim)


def load_onnx_model(model: onnx.ModelProto, taps: Sequence[str] | None = None, source: str = "the ONNX model",
                    transform: nn.Module | None = None) -> TappedOnnxNet:
    """`TappedOnnxNet` of an in-memory model with its input `transform`, in eval mode; `source` names it in errors."""
    return TappedOnnxNet(model, taps, source, transform).eval()
