"""Check a conversion against independent implementations, tap by tap.

For a Caffe model, the same seeded inputs go through (1) the converted torch module, (2) onnxruntime
on our ONNX, and (3) OpenCV's own Caffe importer (`cv2.dnn.readNetFromCaffe`), which never sees our
code. For an ONNX file, torch is compared with onnxruntime running the untouched file. Errors are
max |a − b| and that divided by max |reference| over the blob.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from converters.caffe2onnx import Conversion, convert_caffe
from converters.caffe_net import Layer, read_net
from converters.torch_convert import TappedOnnxNet, load_onnx_model


@dataclass
class TapReport:
    """Differences at one tap; `rel_*` are relative to the reference blob's max |value|."""

    tap: str
    shape: tuple
    ref_max_abs: float
    abs_torch_ort: float
    rel_torch_ort: float
    abs_torch_ref: float | None = None
    rel_torch_ref: float | None = None
    abs_ort_ref: float | None = None
    rel_ort_ref: float | None = None

    @property
    def worst_rel(self) -> float:
        values = [self.rel_torch_ort, self.rel_torch_ref, self.rel_ort_ref]
        return max(v for v in values if v is not None)


def seeded_inputs(shape: Sequence[int | None], n: int = 2, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """n float32 inputs of `shape` (batch replaced by n), normal with std `scale`, from `seed`."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape[1:])) * scale).astype(np.float32)


def _diff(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if a.shape != ref.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {ref.shape}")
    err = float(np.abs(a.astype(np.float64) - ref).max())
    return err, err / max(float(np.abs(ref).max()), 1e-30)


def run_torch(net: TappedOnnxNet, x: np.ndarray, taps: Sequence[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in net.features(torch.from_numpy(x), taps).items()}


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray, taps: Sequence[str], per_sample: bool = False) -> dict[str, np.ndarray]:
    """Blobs by name from onnxruntime; taps that are not graph outputs are added as outputs."""
    model_copy = model
    outputs = {o.name for o in model.graph.output}
    if not set(taps) <= outputs:
        model_copy = onnx.ModelProto()
        model_copy.CopyFrom(model)
        for tap in taps:
            if tap not in outputs:
                model_copy.graph.output.add(name=tap)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model_copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    batches = [x[i : i + 1] for i in range(len(x))] if per_sample else [x]
    results = [session.run(list(taps), {input_name: batch}) for batch in batches]
    return {tap: np.concatenate([r[i] for r in results]) for i, tap in enumerate(taps)}


def opencv_layer_for_blobs(layers: Sequence[Layer]) -> dict[str, str]:
    """Blob → the OpenCV layer whose output is the blob's final value: the last layer writing it
    (with fusion off, OpenCV keeps each Caffe layer, in-place ones included)."""
    writer: dict[str, str] = {}
    for layer in layers:
        for top in layer.tops:
            writer[top] = layer.name
    return writer


def run_opencv(prototxt: str | Path, caffemodel: str | Path, x: np.ndarray, taps: Sequence[str],
               layers: Sequence[Layer]) -> dict[str, np.ndarray]:
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)  # otherwise ReLU folds into the conv before it and per-layer outputs change meaning
    writer = opencv_layer_for_blobs(layers)
    net.setInput(x)
    outs = net.forward([writer[t] for t in taps])
    return {t: np.asarray(o).reshape(o.shape) for t, o in zip(taps, outs)}


def compare_caffe(
    prototxt: str | Path,
    caffemodel: str | Path,
    inputs: np.ndarray | None = None,
    taps: Sequence[str] | None = None,
    conversion: Conversion | None = None,
    net: TappedOnnxNet | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[TapReport]:
    """Torch vs onnxruntime vs OpenCV on `inputs` (default: 2 seeded normal inputs) at every tap."""
    conversion = conversion or convert_caffe(prototxt, caffemodel, input_shapes)
    taps = list(taps or conversion.taps)
    x = seeded_inputs(conversion.input_shape) if inputs is None else np.asarray(inputs, np.float32)
    net = net or load_onnx_model(conversion.model, taps, source=str(prototxt))
    ours = run_torch(net, x, taps)
    ort_out = run_onnxruntime(conversion.model, x, taps)
    cv_out = run_opencv(prototxt, caffemodel, x, taps, read_net(prototxt, input_shapes).layers)
    reports = []
    for tap in taps:
        ref = cv_out[tap].reshape(ours[tap].shape) if cv_out[tap].size == ours[tap].size else cv_out[tap]
        r = TapReport(tap, tuple(ours[tap].shape), float(np.abs(ref).max()), *_diff(ours[tap], ort_out[tap]))
        r.abs_torch_ref, r.rel_torch_ref = _diff(ours[tap], ref)
        r.abs_ort_ref, r.rel_ort_ref = _diff(ort_out[tap], ref)
        reports.append(r)
    return reports


def compare_onnx(
    model: onnx.ModelProto, inputs: np.ndarray | None = None, taps: Sequence[str] | None = None,
    net: TappedOnnxNet | None = None, source: str = "the ONNX model",
) -> list[TapReport]:
    """Torch vs onnxruntime on the file as given (one sample at a time when its batch is fixed), so
    our preparation (Dropout removal, opset upgrade, dynamic batch) is checked along with onnx2torch."""
    net = net or load_onnx_model(model, taps, source=source)
    taps = list(taps or net.taps)
    x = seeded_inputs(net.input_shape) if inputs is None else np.asarray(inputs, np.float32)
    ours = run_torch(net, x, taps)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed_batch = bool(dims) and dims[0].HasField("dim_value")
    original = run_onnxruntime(model, x, taps, per_sample=fixed_batch)
    return [TapReport(tap, tuple(ours[tap].shape), float(np.abs(original[tap]).max()), *_diff(ours[tap], original[tap]))
            for tap in taps]


def format_table(reports: Sequence[TapReport], reference: str | None = "opencv") -> str:
    """A fixed-width table: one row per tap, abs and rel differences of each pair compared."""
    fmt = lambda v: "—" if v is None else f"{v:.2e}"  # noqa: E731
    head = f"{'tap':<24} {'shape':<20} {'max|ref|':>10}  {'torch-ort abs':>13} {'rel':>9}"
    if reference:
        head += f"  {'torch-' + reference + ' abs':>18} {'rel':>9}  {'ort-' + reference + ' rel':>14}"
    lines = [head, "-" * len(head)]
    for r in reports:
        line = f"{r.tap:<24} {str(tuple(r.shape)):<20} {r.ref_max_abs:>10.3g}  {fmt(r.abs_torch_ort):>13} {fmt(r.rel_torch_ort):>9}"
        if reference:
            line += f"  {fmt(r.abs_torch_ref):>18} {fmt(r.rel_torch_ref):>9}  {fmt(r.rel_ort_ref):>14}"
        lines.append(line)
    return "\n".join(lines)


def as_records(reports: Sequence[TapReport]) -> list[dict]:
    return [{**asdict(r), "shape": list(r.shape)} for r in reports]
