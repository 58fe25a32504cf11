"""Command line: `python -m converters {caffe2onnx,torch,verify,squeezenet-dc,squeezenet-top1} …`.

    python -m converters caffe2onnx PROTOTXT CAFFEMODEL OUT.onnx
    python -m converters torch (PROTOTXT CAFFEMODEL | MODEL.onnx) OUT_DIR   # model.pt + manifest.json
    python -m converters verify (PROTOTXT CAFFEMODEL | MODEL.onnx) [--inputs N] [--scale S]
    python -m converters squeezenet-dc OUT.caffemodel
    python -m converters squeezenet-top1 [--limit N] [--out converters/squeezenet_top1.json]

Bad arguments or unconvertible files: one line on stderr, exit status 2. `verify` exits 1 when a
difference exceeds --tolerance.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

# The converter modules with onnx, onnx2torch, onnxruntime or torch are imported inside each subcommand: `--help`
# and the subcommands that do not need them stay fast.
from converters.caffe_net import declared_inputs
from converters.caffemodel import write_caffemodel
from converters.errors import ConversionError
from converters.provenance import file_record, sha256_file


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage too; one line is enough
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return p


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,3,227,227, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got {text!r}")
    return dims


def _model_sources(paths: Sequence[Path], parser: argparse.ArgumentParser) -> tuple[Path | None, Path | None, Path | None]:
    """(prototxt, caffemodel, onnx) from 1 or 2 positional files."""
    if len(paths) == 2:
        return paths[0], paths[1], None
    if len(paths) == 1 and paths[0].suffix == ".onnx":
        return None, None, paths[0]
    parser.error("give PROTOTXT CAFFEMODEL, or one .onnx file")
    raise AssertionError


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m converters", description="Caffe/ONNX → ONNX/PyTorch converters with verification.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caffe2onnx", help="write the ONNX (opset 13, every blob an output) of a Caffe model")
    p.add_argument("prototxt", type=_existing)
    p.add_argument("caffemodel", type=_existing)
    p.add_argument("out", type=Path, help="OUT.onnx")
    p.add_argument("--input-shape", type=_shape, help="N,C,H,W for prototxts whose Data layer does not state it")

    p = sub.add_parser("torch", help="convert to a torch state dict (model.pt) + manifest.json in OUT_DIR")
    p.add_argument("paths", nargs="+", help="PROTOTXT CAFFEMODEL OUT_DIR, or MODEL.onnx OUT_DIR")
    p.add_argument("--input-shape", type=_shape)
    p.add_argument("--scale", type=float, default=1.0, help="std of the verification inputs (50 suits 0–255 images)")

    p = sub.add_parser("verify", help="torch vs onnxruntime vs OpenCV DNN at every tap on seeded inputs")
    p.add_argument("paths", nargs="+", type=_existing, help="PROTOTXT CAFFEMODEL, or MODEL.onnx")
    p.add_argument("--inputs", type=int, default=2, help="number of seeded inputs (the batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="std of the inputs (50 suits 0–255 mean-subtracted images)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference accepted")
    p.add_argument("--input-shape", type=_shape)
    p.add_argument("--json", type=Path, help="also write the figures here")

    p = sub.add_parser("squeezenet-dc", help="decode Deep-Compression SqueezeNet into a real .caffemodel")
    p.add_argument("out", type=Path, help="OUT.caffemodel")
    p.add_argument("--prototxt", type=_existing)
    p.add_argument("--compressed", type=_existing)
    p.add_argument("--layout", choices=("v2", "v1"), default="v2")

    p = sub.add_parser("squeezenet-top1", help="top-1 of the decoded SqueezeNet on imagenet-1k-256")
    p.add_argument("--images", type=Path, help="folder of <wnid>.jpg (default: shared assets imagenet-1k-256)")
    p.add_argument("--synsets", type=Path, help="synset_words.txt (default: shared assets)")
    p.add_argument("--limit", type=int, help="first N images (sorted by name)")
    p.add_argument("--out", type=Path, help="write the figure with provenance to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "python -m converters " + shlex.join(argv)
    try:
        return _COMMANDS[args.command](args, parser)
    except (ConversionError, OSError) as err:  # repro.errors.cli's line, written here: converters import no repro
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        sys.stderr.write(f"error: {message or type(err).__name__}\n")
        return 2


def _caffe2onnx(args, parser) -> int:
    import onnx

    from converters.caffe2onnx import convert_caffe

    conversion = convert_caffe(args.prototxt, args.caffemodel, _input_shapes(args, args.prototxt))
    onnx.save(conversion.model, str(args.out))
    print(f"wrote {args.out}: opset 13, input {conversion.input_name} {conversion.input_shape}, {len(conversion.taps)} taps")
    if conversion.unused_weights:
        print(f"note: the caffemodel's layers {conversion.unused_weights} are not in the prototxt and were ignored (as Caffe does)")
    return 0


def _input_shapes(args, prototxt) -> dict | None:
    """--input-shape applies to the network's one input, whatever its name."""
    if not args.input_shape:
        return None

    return {name: args.input_shape for name in declared_inputs(prototxt)}


def _torch(args, parser) -> int:
    paths = [Path(p) for p in args.paths]
    if len(paths) not in (2, 3):
        parser.error("torch takes PROTOTXT CAFFEMODEL OUT_DIR, or MODEL.onnx OUT_DIR")
    out_dir = paths[-1]
    for p in paths[:-1]:
        if not p.is_file():
            parser.error(f"no such file: {p}")
    prototxt, caffemodel, onnx_path = _model_sources(paths[:-1], parser)

    import torch

    from converters import read_onnx
    from converters.caffe2onnx import convert_caffe
    from converters.torch_convert import load_onnx_model
    from converters.verify import as_records, compare_caffe, compare_onnx, seeded_inputs

    if onnx_path is None:
        conversion = convert_caffe(prototxt, caffemodel, _input_shapes(args, prototxt))
        model, unused = conversion.model, conversion.unused_weights
        sources = {"prototxt": file_record(prototxt), "caffemodel": file_record(caffemodel)}
    else:
        model, unused, conversion = read_onnx(onnx_path), [], None
        sources = {"onnx": file_record(onnx_path)}
    net = load_onnx_model(model, source=" + ".join(str(p) for p in paths[:-1]))
    x = seeded_inputs(net.input_shape, n=2, seed=0, scale=args.scale)
    if conversion is not None:
        reports, reference = compare_caffe(prototxt, caffemodel, x, conversion=conversion, net=net), "opencv"
    else:
        reports, reference = compare_onnx(model, x, net=net, source=str(onnx_path)), "onnxruntime on the original file"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out_dir / "model.pt")
    manifest = {
        "command": args.command_line,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "input": {"name": net.input_name, "shape": list(net.input_shape)},
        "taps": {t: list(net.shapes[t]) for t in net.taps},
        "state_dict": {"file": "model.pt", "sha256": sha256_file(out_dir / "model.pt"), "tensors": len(net.state_dict())},
        "unused_weights": unused,
        "rebuild": "net = converters.load_caffe(prototxt, caffemodel) (or load_onnx(path)); "
                   "net.load_state_dict(torch.load('model.pt', weights_only=True))",
        "verification": {"inputs": 2, "seed": 0, "scale": args.scale, "reference": reference,
                         "max_rel": max(r.worst_rel for r in reports), "per_tap": as_records(reports)},
        "versions": _versions("torch", "onnx", "onnx2torch", "onnxruntime", "opencv-python-headless"),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out_dir / 'model.pt'} and manifest.json: {len(net.taps)} taps, max relative difference "
          f"{manifest['verification']['max_rel']:.2e} vs {reference}")
    return 0


def _verify(args, parser) -> int:
    if args.inputs < 1:
        parser.error("--inputs must be at least 1")
    prototxt, caffemodel, onnx_path = _model_sources(args.paths, parser)

    from converters import read_onnx
    from converters.caffe2onnx import convert_caffe
    from converters.torch_convert import load_onnx_model
    from converters.verify import as_records, compare_caffe, compare_onnx, format_table, seeded_inputs
    if onnx_path is None:
        conversion = convert_caffe(prototxt, caffemodel, _input_shapes(args, prototxt))
        x = seeded_inputs(conversion.input_shape, args.inputs, args.seed, args.scale)
        reports = compare_caffe(prototxt, caffemodel, x, conversion=conversion)
        reference = "opencv"
        if conversion.unused_weights:
            print(f"note: the caffemodel's layers {conversion.unused_weights} are not in the prototxt; ignored, as Caffe does")
    else:
        model = read_onnx(onnx_path)
        net = load_onnx_model(model, source=str(onnx_path))
        x = seeded_inputs(net.input_shape, args.inputs, args.seed, args.scale)
        reports, reference = compare_onnx(model, x, net=net, source=str(onnx_path)), None
    print(format_table(reports, reference))
    if reference is None:
        print("(reference: onnxruntime running the file as given)")
    worst = max(r.worst_rel for r in reports)
    verdict = "OK" if worst <= args.tolerance else "FAIL"
    print(f"{verdict}: largest relative difference {worst:.2e} (tolerance {args.tolerance:.0e}), {args.inputs} inputs, seed {args.seed}")
    if args.json:
        args.json.write_text(json.dumps({"paths": [str(p) for p in args.paths], "inputs": args.inputs, "seed": args.seed,
                                         "scale": args.scale, "max_rel": worst, "per_tap": as_records(reports)}, indent=2) + "\n")
    return 0 if verdict == "OK" else 1


def _squeezenet_dc(args, parser) -> int:
    from converters.squeezenet_dc import decode, default_paths

    prototxt, compressed = default_paths()
    prototxt, compressed = args.prototxt or prototxt, args.compressed or compressed
    weights = decode(prototxt, compressed)
    write_caffemodel(args.out, weights, prototxt, layout=args.layout)
    print(f"wrote {args.out} ({args.layout}): {len(weights)} layers decoded from {compressed} (every byte consumed)")
    return 0


def _squeezenet_top1(args, parser) -> int:
    import torch

    from converters.squeezenet_dc import default_paths, load_squeezenet, top1

    prototxt, compressed = default_paths()
    images = args.images or prototxt.parents[1] / "imagenet-1k-256"
    synsets = args.synsets or prototxt.parents[1] / "caffe" / "synset_words.txt"
    started = time.perf_counter()
    net = load_squeezenet(prototxt, compressed, taps=["pool_final"])
    result = top1(net, images, synsets, limit=args.limit)
    record = {
        "what": "top-1 of SqueezeNet v1.0 (Deep Compression, decoded by converters.squeezenet_dc) on imagenet-1k-256",
        "command": args.command_line,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preprocessing": "cv2.imread BGR 0–255 256×256, centre crop 227 (offset 14), minus (104, 117, 123)",
        "inputs": {"prototxt": file_record(prototxt), "compressed": file_record(compressed), "synsets": file_record(synsets),
                   "images": {"path": str(images), "files_sha256": result["files_sha256"]}},
        "n_images": result["n"], "correct": result["correct"], "top1": result["top1"],
        "wall_s": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
        "versions": _versions("torch", "onnx", "onnx2torch", "opencv-python-headless"),
    }
    print(f"top-1 {result['top1']:.3f} on {result['n']} images")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


_COMMANDS = {"caffe2onnx": _caffe2onnx, "torch": _torch, "verify": _verify, "squeezenet-dc": _squeezenet_dc,
             "squeezenet-top1": _squeezenet_top1}

if __name__ == "__main__":
    sys.exit(main())
