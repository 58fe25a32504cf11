"""Rewrite ONNX graphs that onnx2torch 1.5.15 cannot take into equivalent graphs of ops it can.

The model zoo's classifiers (Caffe2 exports of AlexNet, ZFNet, SqueezeNet, VGG, GoogLeNet/Inception, ResNet,
DenseNet, ShuffleNet; TF/other exports of the same families) use a few constructs onnx2torch refuses; each is
replaced by ops it converts, with the same values (checked against onnxruntime in
tests/converters/test_onnx_rewrites.py):

| construct | where | rewrite |
|---|---|---|
| AveragePool with asymmetric pads (`[0,0,1,1]`: Caffe's ceil pooling emulated) | GoogLeNet/Inception Caffe2 exports | explicit zero `Pad`, AveragePool without pads, then × a constant map kh·kw / divisor where the divisor is what ONNX divides by (the real pixels when count_include_pad = 0, the window within the padded input when 1) |
| `auto_pad` SAME_UPPER / SAME_LOWER on Conv, MaxPool, AveragePool | TF exports (Inception v3, MobileNet, …) | explicit pads from the static input size; asymmetric ones as a zero `Pad` node before a Conv or AveragePool (then rescaled as above); MaxPool takes asymmetric pads as they are |
| GlobalMaxPool | some classifiers' heads | ReduceMax over axes 2, 3 (keepdims) |
| ImageScaler (experimental op, opset ≤ 9; `version_converter` cannot upgrade it) | zoo models with built-in preprocessing | Mul by `scale`, Add of `bias` per channel |

Rewrites need the static spatial size of each rewritten op's input (every classifier here declares its input
size); a graph where it is unknown is left as it is and onnx2torch's own error names the op.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.onnx_skeleton import value_shapes


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _spatial(shapes: dict, name: str) -> tuple[int, ...] | None:
    info = shapes.get(name)
    if info is None:
        return None
    dims = info.type.tensor_type.shape.dim
    values = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[2:])
    return values if len(dims) == 4 and all(values) else None


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model, self.opset = model, _opset(model)
        self.initializers: list[onnx.TensorProto] = []
        self.done: list[str] = []
        self.used_names = {n.name for n in model.graph.node} | {o for n in model.graph.node for o in n.output}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.used_names:
            i += 1
            name = f"{base}_{i}"
        self.used_names.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def pad(self, x: str, pads_hw: list[int], value: float, where: str) -> tuple[str, onnx.NodeProto]:
        """A constant Pad of the spatial axes; pads_hw = [top, left, bottom, right]."""
        t, l, b, r = pads_hw
        full = [0, 0, t, l, 0, 0, b, r]
        out = self.fresh(f"{where}#pad")
        if self.opset < 11:  # pads and value as attributes (Pad-2)
            node = helper.make_node("Pad", [x], [out], name=out, mode="constant", pads=full, value=float(value))
        else:
            inputs = [x, self.const(f"{where}#pads", np.array(full, np.int64))]
            if value != 0:
                inputs.append(self.const(f"{where}#pad_value", np.array(value, np.float32)))
            node = helper.make_node("Pad", inputs, [out], name=out, mode="constant")
        return out, node


def _same_pads(size: tuple[int, int], kernel: list[int], strides: list[int], dilations: list[int],
               upper: bool) -> list[int]:
    """ONNX auto_pad SAME_*: output = ceil(in / stride); the extra pad goes to the end (UPPER) or start (LOWER)."""
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def _avg_rescale(size: tuple[int, int], kernel: list[int], strides: list[int], pads: list[int],
                 count_include_pad: int, ceil_mode: int) -> np.ndarray:
    """kh·kw / ONNX's divisor at every output position (shape (1, 1, H', W')), for an AveragePool computed as
    zero-pad + AveragePool over full windows (which divides by kh·kw everywhere)."""
    factors = []
    for axis in range(2):
        n, k, s, p0, p1 = size[axis], kernel[axis], strides[axis], pads[axis], pads[axis + 2]
        span = n + p0 + p1 - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        start = np.arange(out) * s - p0
        end = start + k
        if count_include_pad:  # padded positions count, positions past the padding (ceil mode) do not
            divisor = np.minimum(end, n + p1) - np.maximum(start, -p0)
        else:
            divisor = np.minimum(end, n) - np.maximum(start, 0)
        factors.append(k / divisor.astype(np.float64))
    return np.outer(factors[0], factors[1])[None, None].astype(np.float32)


def rewrite_for_onnx2torch(model: onnx.ModelProto) -> list[str]:
    """Rewrite `model` in place (see the module docstring); returns a description of each rewrite made.
    Two passes: ops replaced whatever their shapes first (shape inference stops at ImageScaler, which has no
    schema in current onnx), then the padding rewrites, which need the input sizes."""
    done = _rewrite(model, ("ImageScaler", "GlobalMaxPool")) + _rewrite(model, ("AveragePool", "Conv", "MaxPool"))
    if done:
        model.metadata_props.add(key="deepsim.rewrites", value="; ".join(done))
    return done


def _rewrite(model: onnx.ModelProto, kinds: tuple[str, ...]) -> list[str]:
    graph = model.graph
    if not any(n.op_type in kinds for n in graph.node):
        return []
    shapes = None
    rw = _Rewriter(model)
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        a = _attrs(node)
        label = node.name or node.output[0]
        if node.op_type not in kinds:
            new_nodes.append(node)
            continue
        if node.op_type == "ImageScaler":
            scale = rw.const(f"{label}#scale", np.array(a.get("scale", 1.0), np.float32))
            bias = rw.const(f"{label}#bias", np.array(a.get("bias", [0.0]), np.float32).reshape(1, -1, 1, 1))
            scaled = rw.fresh(f"{label}#scaled")
            new_nodes.append(helper.make_node("Mul", [node.input[0], scale], [scaled], name=scaled))
            new_nodes.append(helper.make_node("Add", [scaled, bias], list(node.output), name=rw.fresh(label)))
            rw.done.append(f"ImageScaler {label} → Mul + Add")
            continue
        if node.op_type == "GlobalMaxPool":
            new_nodes.append(helper.make_node("ReduceMax", list(node.input), list(node.output), name=rw.fresh(label),
                                              axes=[2, 3], keepdims=1))
            rw.done.append(f"GlobalMaxPool {label} → ReduceMax(axes 2, 3)")
            continue
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        pads = list(a.get("pads", [0, 0, 0, 0]))
        asymmetric = len(pads) == 4 and (pads[0] != pads[2] or pads[1] != pads[3])
        same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
        if not same and not (node.op_type == "AveragePool" and asymmetric):
            if auto_pad == "VALID":  # the same as no padding; onnx2torch takes NOTSET
                node = _with_attrs(node, a, auto_pad="NOTSET", pads=[0, 0, 0, 0])
            new_nodes.append(node)
            continue
        if shapes is None:
            shapes = value_shapes(model)
        size = _spatial(shapes, node.input[0])
        if size is None:  # unknown size: leave it; onnx2torch's error will name the op
            new_nodes.append(node)
            continue
        if node.op_type == "Conv":
            w_shape = next((list(t.dims) for t in graph.initializer if t.name == node.input[1]), None)
            kernel = list(a.get("kernel_shape", w_shape[2:] if w_shape else []))
        else:
            kernel = list(a["kernel_shape"])
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        if same:
            pads = _same_pads(size, kernel, strides, dilations, auto_pad == "SAME_UPPER")
        symmetric = pads[0] == pads[2] and pads[1] == pads[3]
        if symmetric or node.op_type == "MaxPool":  # onnx2torch pads MaxPool asymmetrically itself (with −inf)
            new_nodes.append(_with_attrs(node, a, auto_pad="NOTSET", pads=pads))
            rw.done.append(f"{node.op_type} {label}: auto_pad {auto_pad} → pads {pads}")
            continue
        # asymmetric: an explicit zero Pad, then the op without padding
        value = 0.0
        ends = [pads[2], pads[3]]
        if node.op_type == "AveragePool" and a.get("ceil_mode"):  # the windows ceil rounding adds, padded explicitly
            for axis in range(2):
                span = size[axis] + pads[axis] + pads[axis + 2] - kernel[axis]
                out = -(-span // strides[axis]) + 1
                ends[axis] += max(0, (out - 1) * strides[axis] + kernel[axis] - (size[axis] + pads[axis] + pads[axis + 2]))
        padded, pad_node = rw.pad(node.input[0], [pads[0], pads[1], *ends], value, label)
        new_nodes.append(pad_node)
        if node.op_type != "AveragePool":
            new_nodes.append(_with_attrs(node, a, auto_pad="NOTSET", pads=[0, 0, 0, 0],
                                         inputs=[padded, *node.input[1:]]))
            rw.done.append(f"{node.op_type} {label}: pads {pads} → Pad + {node.op_type}")
            continue
        rescale = _avg_rescale(size, kernel, strides, pads, int(a.get("count_include_pad", 0)),
                               int(a.get("ceil_mode", 0)))
        pooled = rw.fresh(f"{label}#pooled")
        new_nodes.append(_with_attrs(node, a, auto_pad="NOTSET", pads=[0, 0, 0, 0], count_include_pad=0, ceil_mode=0,
                                     inputs=[padded], outputs=[pooled]))
        if np.allclose(rescale, 1.0):
            new_nodes[-1].output[0] = node.output[0]
        else:
            new_nodes.append(helper.make_node("Mul", [pooled, rw.const(f"{label}#rescale", rescale)],
                                              list(node.output), name=rw.fresh(f"{label}#rescaled")))
        rw.done.append(f"AveragePool {label}: pads {pads} → Pad + AveragePool × divisor map")
    if rw.done:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(rw.initializers)
        if model.ir_version < 4:  # IR 3 lists every initializer as a graph input too
            graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in rw.initializers)
    return rw.done


def _with_attrs(node: onnx.NodeProto, attrs: dict, inputs=None, outputs=None, **changes) -> onnx.NodeProto:
    merged = {**attrs, **changes}
    if merged.get("auto_pad") == "NOTSET":
        merged.pop("auto_pad")
    if "ceil_mode" in changes and not merged["ceil_mode"]:
        merged.pop("ceil_mode")  # absent in AveragePool before opset 10
    if "count_include_pad" in changes and not merged["count_include_pad"]:
        merged.pop("count_include_pad")  # absent in AveragePool before opset 7
    return helper.make_node(node.op_type, list(inputs or node.input), list(outputs or node.output),
                            name=node.name, domain=node.domain, **merged)
