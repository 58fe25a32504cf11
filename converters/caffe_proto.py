"""Caffe's protobuf messages, declared here so no Caffe install is needed, and strict readers for them.

The schema below lists the fields of Caffe's `caffe.proto` (BVLC/caffe, package `caffe`) that a
network definition and its weights use; field numbers, types and defaults are Caffe's, so binary
`.caffemodel` files and text `.prototxt` files parse exactly as Caffe parses them. Both layouts are
declared: the current one (`NetParameter.layer`, field 100, string layer types) and the legacy V1
one (`NetParameter.layers`, field 2, enum layer types).

Two message pools are built from the same table. The *typed* pool is Caffe's schema as is (text
prototxts). The *raw* pool declares the packed float arrays of `BlobProto` as `bytes` — same wire
format — so weights of hundreds of MB become numpy arrays with one `frombuffer` instead of a Python
list of floats.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError, Message

from converters.errors import ConversionError

_Field = descriptor_pb2.FieldDescriptorProto
OPT, REP = _Field.LABEL_OPTIONAL, _Field.LABEL_REPEATED
_SCALARS = {
    "string": _Field.TYPE_STRING, "bytes": _Field.TYPE_BYTES, "bool": _Field.TYPE_BOOL, "float": _Field.TYPE_FLOAT,
    "double": _Field.TYPE_DOUBLE, "int32": _Field.TYPE_INT32, "int64": _Field.TYPE_INT64, "uint32": _Field.TYPE_UINT32,
    "uint64": _Field.TYPE_UINT64,
}

# enum name → (value name, number) pairs, as in caffe.proto.
ENUMS: dict[str, list[tuple[str, int]]] = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
    "VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "RoundMode": [("CEIL", 0), ("FLOOR", 1)],
    "NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)],
    "EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
    "DB": [("LEVELDB", 0), ("LMDB", 1)],
    "NormalizationMode": [("FULL", 0), ("VALID", 1), ("BATCH_SIZE", 2), ("NONE", 3)],
    "LayerType": [  # V1LayerParameter.LayerType
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2), ("CONCAT", 3),
        ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5), ("DECONVOLUTION", 39), ("DROPOUT", 6),
        ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7), ("ELTWISE", 25), ("EXP", 38), ("FLATTEN", 8),
        ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10), ("HINGE_LOSS", 28), ("IM2COL", 11), ("IMAGE_DATA", 12),
        ("INFOGAIN_LOSS", 13), ("INNER_PRODUCT", 14), ("LRN", 15), ("MEMORY_DATA", 29),
        ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34), ("POOLING", 17), ("POWER", 26), ("RELU", 18),
        ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27), ("SILENCE", 36), ("SOFTMAX", 20),
        ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23), ("WINDOW_DATA", 24),
        ("THRESHOLD", 31),
    ],
}

# V1 enum layer type → the type string of the current layout (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

_TYPE_PARAMS = [  # (field, number in LayerParameter, number in V1LayerParameter or None, message)
    ("transform_param", 100, 36, "TransformationParameter"),
    ("loss_param", 101, 42, "LossParameter"),
    ("batch_norm_param", 139, None, "BatchNormParameter"),
    ("concat_param", 104, 9, "ConcatParameter"),
    ("convolution_param", 106, 10, "ConvolutionParameter"),
    ("data_param", 107, 11, "DataParameter"),
    ("dropout_param", 108, 12, "DropoutParameter"),
    ("eltwise_param", 110, 24, "EltwiseParameter"),
    ("flatten_param", 135, None, "FlattenParameter"),
    ("inner_product_param", 117, 17, "InnerProductParameter"),
    ("input_param", 143, None, "InputParameter"),
    ("lrn_param", 118, 18, "LRNParameter"),
    ("memory_data_param", 119, 22, "MemoryDataParameter"),
    ("pooling_param", 121, 19, "PoolingParameter"),
    ("relu_param", 123, 30, "ReLUParameter"),
    ("reshape_param", 133, None, "ReshapeParameter"),
    ("scale_param", 142, None, "ScaleParameter"),
    ("softmax_param", 125, 39, "SoftmaxParameter"),
]

# LayerParameter field → its message, e.g. "convolution_param" → "ConvolutionParameter".
PARAM_MESSAGES = {field: message for field, _, _, message in _TYPE_PARAMS}

# message → [(field, number, label, type, default)]; type is a scalar name, a message or an enum name.
MESSAGES: dict[str, list[tuple[str, int, int, str, str | None]]] = {
    "BlobShape": [("dim", 1, REP, "int64", None)],
    "BlobProto": [
        ("shape", 7, OPT, "BlobShape", None), ("data", 5, REP, "float", None), ("diff", 6, REP, "float", None),
        ("double_data", 8, REP, "double", None), ("double_diff", 9, REP, "double", None),
        ("num", 1, OPT, "int32", "0"), ("channels", 2, OPT, "int32", "0"), ("height", 3, OPT, "int32", "0"),
        ("width", 4, OPT, "int32", "0"),
    ],
    "FillerParameter": [
        ("type", 1, OPT, "string", "constant"), ("value", 2, OPT, "float", "0"), ("min", 3, OPT, "float", "0"),
        ("max", 4, OPT, "float", "1"), ("mean", 5, OPT, "float", "0"), ("std", 6, OPT, "float", "1"),
        ("sparse", 7, OPT, "int32", "-1"), ("variance_norm", 8, OPT, "VarianceNorm", "FAN_IN"),
    ],
    "NetParameter": [
        ("name", 1, OPT, "string", None), ("input", 3, REP, "string", None), ("input_shape", 8, REP, "BlobShape", None),
        ("input_dim", 4, REP, "int32", None), ("force_backward", 5, OPT, "bool", "false"),
        ("state", 6, OPT, "NetState", None), ("debug_info", 7, OPT, "bool", "false"),
        ("layer", 100, REP, "LayerParameter", None), ("layers", 2, REP, "V1LayerParameter", None),
    ],
    "NetState": [("phase", 1, OPT, "Phase", "TEST"), ("level", 2, OPT, "int32", "0"), ("stage", 3, REP, "string", None)],
    "NetStateRule": [
        ("phase", 1, OPT, "Phase", None), ("min_level", 2, OPT, "int32", None), ("max_level", 3, OPT, "int32", None),
        ("stage", 4, REP, "string", None), ("not_stage", 5, REP, "string", None),
    ],
    "ParamSpec": [
        ("name", 1, OPT, "string", None), ("share_mode", 2, OPT, "DimCheckMode", None),
        ("lr_mult", 3, OPT, "float", "1"), ("decay_mult", 4, OPT, "float", "1"),
    ],
    "LayerParameter": [
        ("name", 1, OPT, "string", None), ("type", 2, OPT, "string", None), ("bottom", 3, REP, "string", None),
        ("top", 4, REP, "string", None), ("phase", 10, OPT, "Phase", None), ("loss_weight", 5, REP, "float", None),
        ("param", 6, REP, "ParamSpec", None), ("blobs", 7, REP, "BlobProto", None),
        ("propagate_down", 11, REP, "bool", None), ("include", 8, REP, "NetStateRule", None),
        ("exclude", 9, REP, "NetStateRule", None),
    ] + [(field, number, OPT, message, None) for field, number, _, message in _TYPE_PARAMS],
    "V1LayerParameter": [
        ("bottom", 2, REP, "string", None), ("top", 3, REP, "string", None), ("name", 4, OPT, "string", None),
        ("include", 32, REP, "NetStateRule", None), ("exclude", 33, REP, "NetStateRule", None),
        ("type", 5, OPT, "LayerType", None), ("blobs", 6, REP, "BlobProto", None), ("param", 1001, REP, "string", None),
        ("blob_share_mode", 1002, REP, "DimCheckMode", None), ("blobs_lr", 7, REP, "float", None),
        ("weight_decay", 8, REP, "float", None), ("loss_weight", 35, REP, "float", None),
        ("layer", 1, OPT, "V0LayerParameter", None),
    ] + [(field, v1, OPT, message, None) for field, _, v1, message in _TYPE_PARAMS if v1 is not None],
    # V0 (pre-2014) layers are not supported; declared only so that we can say so clearly.
    "V0LayerParameter": [("name", 1, OPT, "string", None), ("type", 2, OPT, "string", None)],
    "TransformationParameter": [
        ("scale", 1, OPT, "float", "1"), ("mirror", 2, OPT, "bool", "false"), ("crop_size", 3, OPT, "uint32", "0"),
        ("mean_file", 4, OPT, "string", None), ("mean_value", 5, REP, "float", None),
        ("force_color", 6, OPT, "bool", "false"), ("force_gray", 7, OPT, "bool", "false"),
    ],
    "LossParameter": [
        ("ignore_label", 1, OPT, "int32", None), ("normalization", 3, OPT, "NormalizationMode", "VALID"),
        ("normalize", 2, OPT, "bool", None),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, OPT, "bool", None), ("moving_average_fraction", 2, OPT, "float", "0.999"),
        ("eps", 3, OPT, "float", "1e-05"),
    ],
    "ConcatParameter": [("axis", 2, OPT, "int32", "1"), ("concat_dim", 1, OPT, "uint32", "1")],
    "ConvolutionParameter": [
        ("num_output", 1, OPT, "uint32", None), ("bias_term", 2, OPT, "bool", "true"), ("pad", 3, REP, "uint32", None),
        ("kernel_size", 4, REP, "uint32", None), ("stride", 6, REP, "uint32", None), ("dilation", 18, REP, "uint32", None),
        ("pad_h", 9, OPT, "uint32", "0"), ("pad_w", 10, OPT, "uint32", "0"), ("kernel_h", 11, OPT, "uint32", None),
        ("kernel_w", 12, OPT, "uint32", None), ("stride_h", 13, OPT, "uint32", None), ("stride_w", 14, OPT, "uint32", None),
        ("group", 5, OPT, "uint32", "1"), ("weight_filler", 7, OPT, "FillerParameter", None),
        ("bias_filler", 8, OPT, "FillerParameter", None), ("engine", 15, OPT, "Engine", "DEFAULT"),
        ("axis", 16, OPT, "int32", "1"), ("force_nd_im2col", 17, OPT, "bool", "false"),
    ],
    "DataParameter": [
        ("source", 1, OPT, "string", None), ("batch_size", 4, OPT, "uint32", None), ("rand_skip", 7, OPT, "uint32", "0"),
        ("backend", 8, OPT, "DB", "LEVELDB"), ("scale", 2, OPT, "float", "1"), ("mean_file", 3, OPT, "string", None),
        ("crop_size", 5, OPT, "uint32", "0"), ("mirror", 6, OPT, "bool", "false"),
        ("force_encoded_color", 9, OPT, "bool", "false"), ("prefetch", 10, OPT, "uint32", "4"),
    ],
    "DropoutParameter": [("dropout_ratio", 1, OPT, "float", "0.5")],
    "EltwiseParameter": [
        ("operation", 1, OPT, "EltwiseOp", "SUM"), ("coeff", 2, REP, "float", None),
        ("stable_prod_grad", 3, OPT, "bool", "true"),
    ],
    "FlattenParameter": [("axis", 1, OPT, "int32", "1"), ("end_axis", 2, OPT, "int32", "-1")],
    "InnerProductParameter": [
        ("num_output", 1, OPT, "uint32", None), ("bias_term", 2, OPT, "bool", "true"),
        ("weight_filler", 3, OPT, "FillerParameter", None), ("bias_filler", 4, OPT, "FillerParameter", None),
        ("axis", 5, OPT, "int32", "1"), ("transpose", 6, OPT, "bool", "false"),
    ],
    "InputParameter": [("shape", 1, REP, "BlobShape", None)],
    "LRNParameter": [
        ("local_size", 1, OPT, "uint32", "5"), ("alpha", 2, OPT, "float", "1"), ("beta", 3, OPT, "float", "0.75"),
        ("norm_region", 4, OPT, "NormRegion", "ACROSS_CHANNELS"), ("k", 5, OPT, "float", "1"),
        ("engine", 6, OPT, "Engine", "DEFAULT"),
    ],
    "MemoryDataParameter": [
        ("batch_size", 1, OPT, "uint32", None), ("channels", 2, OPT, "uint32", None),
        ("height", 3, OPT, "uint32", None), ("width", 4, OPT, "uint32", None),
    ],
    "PoolingParameter": [
        ("pool", 1, OPT, "PoolMethod", "MAX"), ("pad", 4, OPT, "uint32", "0"), ("pad_h", 9, OPT, "uint32", "0"),
        ("pad_w", 10, OPT, "uint32", "0"), ("kernel_size", 2, OPT, "uint32", None), ("kernel_h", 5, OPT, "uint32", None),
        ("kernel_w", 6, OPT, "uint32", None), ("stride", 3, OPT, "uint32", "1"), ("stride_h", 7, OPT, "uint32", None),
        ("stride_w", 8, OPT, "uint32", None), ("engine", 11, OPT, "Engine", "DEFAULT"),
        ("global_pooling", 12, OPT, "bool", "false"), ("round_mode", 13, OPT, "RoundMode", "CEIL"),
    ],
    "ReLUParameter": [("negative_slope", 1, OPT, "float", "0"), ("engine", 2, OPT, "Engine", "DEFAULT")],
    "ReshapeParameter": [
        ("shape", 1, OPT, "BlobShape", None), ("axis", 2, OPT, "int32", "0"), ("num_axes", 3, OPT, "int32", "-1"),
    ],
    "ScaleParameter": [
        ("axis", 1, OPT, "int32", "1"), ("num_axes", 2, OPT, "int32", "1"), ("filler", 3, OPT, "FillerParameter", None),
        ("bias_term", 4, OPT, "bool", "false"), ("bias_filler", 5, OPT, "FillerParameter", None),
    ],
    "SoftmaxParameter": [("engine", 1, OPT, "Engine", "DEFAULT"), ("axis", 2, OPT, "int32", "1")],
}
# Messages whose every field we interpret: a field we do not know inside them is a typo that Caffe
# would reject, so we reject it too. Unknown fields elsewhere (parameters of layers we never
# convert, e.g. `data_param` extras, `python_param`) are skipped as irrelevant.
STRICT_MESSAGES = frozenset(MESSAGES) - {
    "V0LayerParameter", "DataParameter", "TransformationParameter", "LossParameter", "FillerParameter", "ParamSpec",
}
_PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"), ("BlobProto", "double_data"),
           ("BlobProto", "double_diff")}
_RAW_BYTES = {("BlobProto", "data"), ("BlobProto", "diff"), ("BlobProto", "double_data"), ("BlobProto", "double_diff")}


def _file_descriptor(raw: bool) -> descriptor_pb2.FileDescriptorProto:
    package = "caffe_raw" if raw else "caffe"
    proto = descriptor_pb2.FileDescriptorProto(name=f"deepsim/{package}.proto", package=package, syntax="proto2")
    proto.enum_type.add(name="Phase").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=n, number=v) for n, v in ENUMS["Phase"]
    )
    for message_name, fields in MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        # enums nest in the message that uses them, as in caffe.proto, so that value names such as
        # MAX (pooling and eltwise) do not clash
        nested = sorted({t for _, _, _, t, _ in fields if t in ENUMS and t != "Phase"})
        for nested_enum in nested:
            message.enum_type.add(name=nested_enum).value.extend(
                descriptor_pb2.EnumValueDescriptorProto(name=n, number=v) for n, v in ENUMS[nested_enum]
            )
        for field_name, number, label, type_name, default in fields:
            field = message.field.add(name=field_name, number=number, label=label)
            if raw and (message_name, field_name) in _RAW_BYTES:
                field.type = _Field.TYPE_BYTES
            elif type_name in _SCALARS:
                field.type = _SCALARS[type_name]
                if (message_name, field_name) in _PACKED:
                    field.options.packed = True
            elif type_name == "Phase":
                field.type, field.type_name = _Field.TYPE_ENUM, f".{package}.Phase"
            elif type_name in ENUMS:
                field.type, field.type_name = _Field.TYPE_ENUM, f".{package}.{message_name}.{type_name}"
            else:
                field.type, field.type_name = _Field.TYPE_MESSAGE, f".{package}.{type_name}"
            if default is not None:
                field.default_value = default
    return proto


def enum_name(enum: str, number: int) -> str:
    """Caffe's name of an enum value (`enum_name("PoolMethod", 1) == "AVE"`)."""
    for value_name, value in ENUMS[enum]:
        if value == number:
            return value_name
    raise KeyError(f"{enum} has no value {number}")


@functools.cache
def _classes(raw: bool) -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor(raw))
    package = "caffe_raw" if raw else "caffe"
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}")) for name in MESSAGES}


def message_class(name: str, raw: bool = False) -> Any:
    """The generated class of a Caffe message; `raw=True` gives blobs' float arrays as bytes."""
    return _classes(raw)[name]


class _TextParser(text_format._Parser):  # noqa: SLF001 — the public API cannot report skipped fields
    """protobuf's text parser that skips unknown fields but records where they were."""

    def __init__(self) -> None:
        super().__init__(allow_unknown_field=True)
        self.skipped: list[tuple[str, str, int]] = []
        self._skip_depth = 0

    def _SkipFieldContents(self, tokenizer, field_name, immediate_message_type):  # noqa: N802
        if self._skip_depth == 0:
            self.skipped.append((immediate_message_type.split(".")[-1], field_name, tokenizer._line + 1))
        self._skip_depth += 1
        try:
            super()._SkipFieldContents(tokenizer, field_name, immediate_message_type)
        finally:
            self._skip_depth -= 1


def parse_prototxt(path: str | Path) -> Message:
    """A text `.prototxt` as a `caffe.NetParameter` (typed pool).

    Unknown fields inside the messages we interpret (a misspelt `kernal_size`) are errors, as in
    Caffe; unknown `*_param` blocks of layers we do not convert are skipped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConversionError(f"cannot read network definition {path}: {err}") from err
    net = message_class("NetParameter")()
    parser = _TextParser()
    try:
        parser.ParseLines(text.split("\n"), net)
    except text_format.ParseError as err:
        raise ConversionError(f"{path} is not a valid Caffe prototxt: {err}") from err
    for message, field, line in parser.skipped:
        layer_level = message in ("LayerParameter", "V1LayerParameter") and field.endswith("_param")
        if message in STRICT_MESSAGES and not layer_level:
            raise ConversionError(
                f"{path}:{line}: Caffe's {message} has no field {field!r}; fix the prototxt (a typo?)"
            )
    if not net.layer and not net.layers:
        raise ConversionError(f"{path} defines no layers; is it a Caffe network definition?")
    return net


def parse_binary(path: str | Path, message: str = "NetParameter", what: str = "caffemodel") -> Message:
    """A binary Caffe message (`.caffemodel`, `.binaryproto`) from the raw pool, or a clear error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConversionError(f"cannot read {what} {path}: {err}") from err
    return parse_bytes(data, message, f"{what} {path}")


def parse_bytes(data: bytes, message: str, source: str) -> Message:
    parsed = message_class(message, raw=True)()
    try:
        parsed.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ConversionError(
            f"{source} is not a valid Caffe {message} protobuf (truncated or corrupt?): {str(err).replace('caffe_raw.', 'caffe.')}"
        ) from err
    return parsed


def blob_shape(blob: Message) -> tuple[int, ...]:
    """The shape a `BlobProto` states: `shape.dim`, else the legacy num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def blob_array(blob: Message, source: str) -> np.ndarray:
    """A raw-pool `BlobProto` as a float32 array of its stated shape (float or double storage)."""
    shape = blob_shape(blob)
    if any(d < 0 for d in shape):
        raise ConversionError(f"{source}: blob has a negative dimension {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if blob.data:
        values = np.frombuffer(b"".join(blob.data), dtype="<f4")
    elif blob.double_data:
        values = np.frombuffer(b"".join(blob.double_data), dtype="<f8")
    elif count == 0:
        values = np.zeros(0, np.float32)
    else:
        values = _unpacked_values(blob)
    if values.size != count:
        raise ConversionError(f"{source}: blob states shape {shape} ({count} values) but holds {values.size} values")
    return values.astype(np.float32).reshape(shape)  # a writable copy (frombuffer views are read-only)


def _unpacked_values(blob: Message) -> np.ndarray:
    """Floats written one per field (non-packed): re-read with the typed pool (rare, slower)."""
    typed = message_class("BlobProto")()
    typed.ParseFromString(blob.SerializeToString())
    if typed.data:
        return np.asarray(typed.data, dtype=np.float32)
    return np.asarray(typed.double_data, dtype=np.float64)


def array_blob(array: np.ndarray, legacy_4d: bool = False) -> Message:
    """A raw-pool `BlobProto` holding `array` as packed float32; `legacy_4d` writes the pre-2015
    num/channels/height/width dims (left-padded with 1s) instead of `shape`, as old caffemodels do."""
    blob = message_class("BlobProto", raw=True)()
    array = np.ascontiguousarray(array, dtype="<f4")
    if legacy_4d:
        if array.ndim > 4:
            raise ValueError(f"a legacy 4-D blob cannot hold shape {array.shape}")
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    blob.data.append(array.tobytes())
    return blob
