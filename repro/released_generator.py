"""The released DeePSiM generators (Caffe) → `repro.nets.generator.Generator` and generator files.

Dosovitskiy & Brox released their generators as Caffe files; Nguyen et al. (2016, "Synthesizing the preferred
inputs for neurons") used them as image priors with the prototxts `generator_fc6.prototxt`,
`generator_fc7.prototxt` and `generator_pool5.prototxt` (in ../shared/assets/reference-prototxt/synthesizing).
The weights (`generator.caffemodel`) are the user's to bring:

    python -m repro.released_generator generator_fc6.prototxt generator.caffemodel fc6.generator.pt
    python -m repro.invert IMAGES --generator fc6.generator.pt --encoder-weights bvlc_reference_caffenet.caffemodel --out DIR

What the prototxts hold (each checked layer by layer against `Generator`'s table before any weight is used):
- input `feat`: 4096 (fc6/fc7: CaffeNet's fc6/fc7 after ReLU) or 256×6×6 (pool5);
- fc6/fc7: InnerProduct defc7/defc6/defc5 (4096) → Reshape 256×4×4; pool5: Convolution Rconv6/7/8 (512, k3;
  Rconv8 pad 0: 6 → 4);
- Deconvolution deconv5 … deconv0 (k4 s2 p1 up-convolutions, k3 s1 p1 "conv" layers that are Deconvolutions
  too), each but deconv0 followed by an in-place ReLU with negative_slope 0.3 (LeakyReLU);
- output `deconv0`: 3×256×256 BGR 0–255 minus the ILSVRC mean. There is no crop layer: act_max.py of Nguyen
  et al. crops the centre 227×227 (top-left (256 − 227)/2 = 14) before CaffeNet, which is what `Generator`
  does at resolution 227 (`resolution=256` keeps the whole output).

Weights are read with `converters.caffe_blobs` (V1 or V2 caffemodels; every blob's shape checked against the
prototxt), mapped by an explicit name table to the generator's state dict, every tensor once, and loaded
with `strict=True`. `compare` checks the result at every layer against onnxruntime and OpenCV DNN.

It sits in repro, not converters, because it builds repro's `Generator` (converters know nothing of repro);
it reads the Caffe files with the converters.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from converters import caffe_blobs
from converters.caffe_net import read_net
from converters.errors import ConversionError
from converters.provenance import file_record
from repro.errors import cli, user_input
from repro.generator_file import save_generator
from repro.nets.caffenet import ILSVRC_MEAN_BGR
from repro.nets.generator import CONV_LAYERS, FC_LAYERS, FC_WIDTH, HEAD_CHANNELS, UPCONV_LAYERS, Generator

RELEASED = {name: f"reference-prototxt/synthesizing/generator_{name}.prototxt" for name in ("fc6", "fc7", "pool5")}
INPUT_BLOB = "feat"
OUTPUT_BLOB = "deconv0"


def _expected_layers(in_shape: tuple[int, ...]) -> list[tuple[str, str, int, int, int, int]]:
    """(name, Caffe type, num_output, kernel, stride, pad) of every parameter layer of the released generator."""
    if len(in_shape) == 1:
        head = [(name, "InnerProduct", FC_WIDTH, 0, 0, 0) for name in FC_LAYERS]
    else:
        head = [(name, "Convolution", HEAD_CHANNELS, 3, 1, 0 if name == "Rconv8" else 1) for name in CONV_LAYERS]
    return head + [(name, "Deconvolution", cout, k, s, p) for name, cout, k, s, p in UPCONV_LAYERS]


def _geometry(layer) -> tuple[int, int, int, int]:
    p = layer.param
    if layer.type == "InnerProduct":
        return p.num_output, 0, 0, 0
    one = lambda values, default: int(values[0]) if len(values) else default  # noqa: E731
    return p.num_output, one(p.kernel_size, 0), one(p.stride, 1), one(p.pad, 0)


def check_architecture(prototxt: str | Path) -> tuple[tuple[int, ...], float]:
    """The generator's input shape and LeakyReLU slope, after checking every layer of `prototxt` against the
    released architecture (names, types, widths, kernels, strides, pads, the ReLU after each layer)."""
    net = read_net(prototxt)
    if list(net.inputs) != [INPUT_BLOB]:
        raise ConversionError(f"{prototxt}: a released DeePSiM generator has one input {INPUT_BLOB!r}, not {list(net.inputs)}")
    in_shape = tuple(int(d) for d in net.inputs[INPUT_BLOB][1:])
    if in_shape not in ((4096,), (256, 6, 6)):
        raise ConversionError(f"{prototxt}: input {INPUT_BLOB!r} has shape {in_shape}; the released generators take "
                              "4096 (fc6/fc7) or 256×6×6 (pool5)")
    expected = _expected_layers(in_shape)
    params = [layer for layer in net.layers if layer.type in ("InnerProduct", "Convolution", "Deconvolution")]
    got = [(layer.name, layer.type, *_geometry(layer)) for layer in params]
    if got != expected:
        bad = next((g, e) for g, e in zip(got + [None] * len(expected), expected + [None] * len(got)) if g != e)
        raise ConversionError(f"{prototxt} is not a released DeePSiM generator: layer {bad[0]} where "
                              f"{bad[1]} (name, type, num_output, kernel, stride, pad) was expected")
    slopes, relu_after = set(), {}
    for layer in net.layers:
        if layer.type == "ReLU":
            if not layer.in_place:
                raise ConversionError(f"{prototxt}: ReLU {layer.name!r} is not in place")
            slopes.add(float(f"{layer.param.negative_slope:.7g}"))  # a float32 field: 0.3, not 0.30000001
            relu_after[layer.bottoms[0]] = layer.name
    missing = [name for name, *_ in expected if name != OUTPUT_BLOB and name not in relu_after]
    if missing or OUTPUT_BLOB in relu_after or len(slopes) != 1:
        raise ConversionError(f"{prototxt}: expected one LeakyReLU slope after every layer but {OUTPUT_BLOB} "
                              f"(missing after {missing}, slopes {sorted(slopes)})")
    return in_shape, slopes.pop()


def state_dict_from_blobs(blobs: Mapping[str, Sequence[np.ndarray]], in_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Caffe {layer: [weight, bias]} → the Generator's parameters by an explicit table, every blob used once.
    Caffe's layouts are torch's here: InnerProduct (out, in) = Linear, Convolution (out, in, k, k) = Conv2d,
    Deconvolution (in, out, k, k) = ConvTranspose2d."""
    table = {name: f"{'head' if typ != 'Deconvolution' else 'upconv'}.{name}" for name, typ, *_ in _expected_layers(in_shape)}
    extra = sorted(set(blobs) - set(table))
    if extra:
        raise ConversionError(f"weights for layers {extra} that the released generator does not have")
    state = {}
    for layer, prefix in table.items():
        arrays = blobs[layer]
        if len(arrays) != 2:
            raise ConversionError(f"layer {layer!r} has {len(arrays)} blobs; expected weight and bias")
        state[f"{prefix}.weight"] = torch.from_numpy(np.array(arrays[0], np.float32))
        state[f"{prefix}.bias"] = torch.from_numpy(np.array(arrays[1], np.float32))
    return state


def load_released_generator(prototxt: str | Path, caffemodel: str | Path, resolution: int = 227) -> Generator:
    """A released DeePSiM generator as `repro.nets.generator.Generator` (eval mode, float32, width 1).

    resolution 227 crops the centre of the 256×256 output as Nguyen et al.'s act_max.py does; 256 keeps it.
    Built on the meta device and assigned, so no random initialisation touches the global RNG.
    """
    if resolution not in range(193, 257):  # the stack always makes 256 (start 4); only a centre crop is possible
        raise ValueError(f"the released generators make 256×256 images; resolution must be in 193–256, got {resolution}")
    in_shape, slope = check_architecture(prototxt)
    state = state_dict_from_blobs(caffe_blobs(prototxt, caffemodel), in_shape)
    with torch.device("meta"):
        generator = Generator(in_shape, resolution=resolution, width=1.0, leaky_slope=slope)
    state["output.mean"] = torch.tensor(ILSVRC_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)  # FromCaffeUnits
    missing = set(generator.state_dict()) ^ set(state)
    if missing:
        raise ConversionError(f"name table and generator disagree on {sorted(missing)}")
    generator.load_state_dict(state, strict=True, assign=True)
    return generator.eval()


def caffe_blobs_of(generator, code: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every Caffe blob of the released prototxt as `generator` computes it (blob = value after its
    in-place ReLU; `reshape_defc5` for the fc generators; `deconv0` before the crop, in Caffe units)."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    modules = dict(generator.named_modules())
    for name, module in modules.items():
        if "." not in name:
            continue
        stem = name.split(".", 1)[1]
        blob = {"reshape": "reshape_defc5"}.get(stem)
        if blob is None and (stem.startswith("relu_") or stem.startswith("Rrelu")):
            blob = stem[5:] if stem.startswith("relu_") else f"Rconv{stem[5:]}"
        if blob is None and stem == OUTPUT_BLOB:
            blob = OUTPUT_BLOB
        if blob:
            handles.append(module.register_forward_hook(lambda m, i, o, blob=blob: outputs.__setitem__(blob, o.detach().clone())))
    try:
        with torch.no_grad():
            generator(code)
    finally:
        for h in handles:
            h.remove()
    return outputs


def compare(prototxt: str | Path, caffemodel: str | Path, code: np.ndarray) -> list[dict]:
    """At every blob: our Generator vs onnxruntime and OpenCV DNN (both on the Caffe files), and the ONNX → torch
    conversion vs both (`converters.verify.compare_caffe`). Rows: {tap, shape, ref_max_abs, rel_*}, rel =
    max |a − b| / max |OpenCV|."""
    # local: the references (onnx, onnx2torch, onnxruntime) take seconds to load and only --verify needs them
    from converters.caffe2onnx import convert_caffe
    from converters.verify import compare_caffe, run_onnxruntime, run_opencv

    generator = load_released_generator(prototxt, caffemodel, resolution=256)
    ours = caffe_blobs_of(generator, torch.from_numpy(code))
    conversion = convert_caffe(prototxt, caffemodel)
    reports = compare_caffe(prototxt, caffemodel, code, conversion=conversion)
    taps = [r.tap for r in reports]
    ort = run_onnxruntime(conversion.model, code, taps)
    cv = run_opencv(prototxt, caffemodel, code, taps, read_net(prototxt).layers)
    rows = []
    for r in reports:
        mine = ours[r.tap].numpy().astype(np.float64)
        ref = cv[r.tap].reshape(mine.shape)
        scale = max(float(np.abs(ref).max()), 1e-30)
        rows.append({"tap": r.tap, "shape": r.shape, "ref_max_abs": float(np.abs(ref).max()),
                     "rel_generator_opencv": float(np.abs(mine - ref).max()) / scale,
                     "rel_generator_ort": float(np.abs(mine - ort[r.tap]).max()) / scale,
                     "rel_onnx_torch_opencv": r.rel_torch_ref, "rel_onnx_torch_ort": r.rel_torch_ort,
                     "rel_ort_opencv": r.rel_ort_ref})
    return rows


def convert(prototxt: str | Path, caffemodel: str | Path, out: str | Path, resolution: int = 227,
            tap: str | None = None, half: bool = False) -> dict:
    """Write a generator file (`repro.generator_file`) for a released generator. Its encoder is CaffeNet
    (`caffenet`, the user's weights) at the tap the prototxt's input implies (fc6/fc7 for 4096, pool5)."""
    generator = load_released_generator(prototxt, caffemodel, resolution)
    if tap is None:
        if len(generator.in_shape) == 3:
            tap = "pool5"
        else:
            stem = Path(prototxt).stem
            tap = "fc7" if stem.endswith("fc7") else "fc6" if stem.endswith("fc6") else None
            if tap is None:
                raise ConversionError(f"cannot tell fc6 from fc7 by the name {Path(prototxt).name}; pass --tap fc6 or fc7")
    source = {"converted_from": {"prototxt": file_record(prototxt), "caffemodel": file_record(caffemodel)},
              "by": "repro.released_generator"}
    return save_generator(out, generator, encoder="caffenet", tap=tap, source=source, half=half)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.released_generator", description=__doc__.split("\n")[0])
    parser.add_argument("prototxt", help="generator_fc6/fc7/pool5.prototxt (released)")
    parser.add_argument("caffemodel", help="the matching generator.caffemodel")
    parser.add_argument("out", help="generator file to write (e.g. fc6.generator.pt)")
    parser.add_argument("--resolution", type=int, default=227, help="227: centre crop as act_max.py (default); 256: all")
    parser.add_argument("--tap", choices=("fc6", "fc7", "pool5"), help="CaffeNet layer it inverts (default: from the file name)")
    parser.add_argument("--half", action="store_true", help="store float16")
    parser.add_argument("--verify", action="store_true", help="also compare every layer with onnxruntime and OpenCV")
    args = parser.parse_args(argv)
    with user_input(ValueError, FileNotFoundError):  # ConversionError: a user error already
        record = convert(args.prototxt, args.caffemodel, args.out, args.resolution, args.tap, args.half)
        if args.verify:
            in_shape = tuple(record["generator"]["in_shape"])
            code = np.random.default_rng(0).standard_normal((1, *in_shape)).astype(np.float32)
            for row in compare(args.prototxt, args.caffemodel, code):
                worst = max(v for k, v in row.items() if k.startswith("rel_"))
                print(f"{row['tap']:<16} {str(tuple(row['shape'])):<22} worst rel {worst:.2e}")
    print(f"{args.prototxt} + {args.caffemodel} → {args.out} (caffenet:{record['tap']}, sha256 {record['sha256'][:12]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
