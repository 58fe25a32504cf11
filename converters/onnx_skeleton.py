"""ONNX graphs without their weights, for checks and shape inference that need only the structure.

`onnx.checker` and ONNX shape inference serialise the whole model, weights included (hundreds of MB
for CaffeNet, several times per conversion). Turning large initializers into typed graph inputs gives
the same answers about nodes and shapes at a fraction of the cost.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

# Initializers up to this many elements stay constants (shape vectors, scalars): shape inference
# needs their values, e.g. a Reshape's target shape.
SMALL_TENSOR_ELEMENTS = 1 << 14


def weightless(model: onnx.ModelProto, keep_up_to: int = 0) -> onnx.ModelProto:
    """A copy of `model` whose initializers of more than `keep_up_to` elements are typed inputs."""
    skeleton = onnx.ModelProto(ir_version=max(model.ir_version, 4), producer_name=model.producer_name)
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    for tensor in model.graph.initializer:
        if int(np.prod(tensor.dims)) <= keep_up_to:  # (tensor.ByteSize() would walk the data)
            graph.initializer.append(tensor)
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return skeleton


def value_shapes(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """ValueInfo (type and shape) of every value shape inference can type, inferred without the weights."""
    inferred = shape_inference.infer_shapes(weightless(model, keep_up_to=SMALL_TENSOR_ELEMENTS))
    return {v.name: v for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
