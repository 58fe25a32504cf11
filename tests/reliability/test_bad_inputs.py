"""Bad inputs everywhere: every CLI rejects bad arguments with a one-line reason and exit status 2 (no
traceback, nothing written); the Caffe converter survives seeded byte flips and truncations of a real
caffemodel without a crash or a silently wrong model; undecodable images are reported and skipped."""
from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from repro import checkpoint
from repro.config import make_config
from repro.data import ImageFolder, list_images, make_loader

TEXT = Path(__file__)  # a text file, handed over where weights are expected


def exit_status(main, argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a CLI `main(argv)`, whether it returns or raises SystemExit. Any other
    exception fails the test: that would be a traceback for the user."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_rejected(main, argv, capsys, reason: str):
    status, err = exit_status(main, argv, capsys)
    errors = [line for line in err.splitlines() if re.search(r"(^|: )error: ", line)]
    assert status == 2, f"{argv}: exit {status}\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1 and reason in errors[0], f"{argv}: expected one error line with {reason!r}:\n{err}"


# ---- python -m repro.train ------------------------------------------------------------------------------
@pytest.fixture()
def foreign_run(tmp_path):
    """Run folders for --resume: one whose newest checkpoint was made by another config (conv5 instead of
    pool5), one whose only checkpoint is corrupt. Tiny stand-in checkpoints: only their config is read."""
    smoke = make_config("smoke")
    foreign, corrupt = tmp_path / "foreign", tmp_path / "corrupt"
    for folder in (foreign, corrupt):
        folder.mkdir()
        (folder / "config.json").write_text(smoke.to_json())
    checkpoint.save(foreign / "checkpoints", 1, {"config": make_config("smoke", {"layer": "conv5"}).to_json()})
    saved = checkpoint.save(corrupt / "checkpoints", 1, {"config": smoke.to_json()})
    (saved / "state.pt").write_bytes(b"\0" * 64)
    return foreign, corrupt


def test_train_cli_rejects_bad_arguments(tmp_path, capsys, foreign_run, record_fault):
    from repro.train import main

    foreign, corrupt = foreign_run
    run = ["--launcher", "local", "--no-progress", "--run-dir", str(tmp_path / "never")]
    cases = [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "smoke", "--set", "stepz=3"], "unknown config key 'stepz'"),
        (["--preset", "smoke", "--set", "steps=many"], "steps: expected int"),
        (["--preset", "smoke", "--set", "layer=fc9"], "encoder tap 'fc9' does not exist in alexnet"),
        (["--preset", "smoke", "--set", "comparator_tap=conv9"], "comparator tap 'conv9' does not exist"),
        (["--preset", "smoke", "--set", "comparator=vgg"], "comparator='vgg' is not a known network"),
        (["--preset", "smoke", "--set", "encoder=resnet"], "encoder='resnet' is not a known network"),
        (["--preset", "smoke", "--set", f"train_data={tmp_path / 'missing'}"], "does not exist"),
        (["--preset", "smoke", "--set", f"eval_data={tmp_path}"], "holds no .jpg/.jpeg/.png files"),
        (["--preset", "smoke", "--set", "encoder=caffenet"], "encoder=caffenet needs your bvlc_reference_caffenet"),
        (["--preset", "smoke", "--set", "layer=fc6"], "encoder tap fc6 of the pretrained alexnet"),
        (["--preset", "paper-fc6"], "give --set train_data="),
        (["--preset", "smoke", "--set", "encoder=caffenet", "--set", f"encoder_weights={tmp_path / 'x.caffemodel'}"],
         "does not exist"),
        (["--preset", "smoke", "--set", "encoder=caffenet", "--set", f"encoder_weights={TEXT}"],
         "is not a valid Caffe NetParameter"),
        (["--preset", "smoke", "--set", "comparator=onnx", "--set", f"comparator_weights={TEXT}"],
         "cannot read ONNX file"),
        (["--preset", "smoke", "--num-workers", "0"], "--num-workers must be ≥ 1"),
        (["--preset", "smoke", "--launcher", "slurm"], "invalid choice: 'slurm'"),
        (["--resume", str(tmp_path / "missing")], "not a run folder"),
        (["--resume", str(foreign), "--preset", "paper-fc6"], "is a 'smoke' run, not 'paper-fc6'"),
        (["--resume", str(foreign), "--set", "layer=conv5"], "cannot change ['layer'] when resuming"),
        (["--resume", str(foreign)], "was made with another config than"),
        (["--resume", str(corrupt)], "has no intact checkpoint to resume from"),
    ]
    for argv, reason in cases:
        assert_rejected(main, argv + run, capsys, reason)
    record_fault(f"{len(cases)} bad arguments to `python -m repro.train`",
                 "unknown preset/key/type/network/tap, missing or empty image folders, missing weights, a text "
                 "file as caffemodel or ONNX, a bad launcher, --resume of a missing, foreign-config or "
                 "checkpoint-less run folder",
                 "nothing: exit 2 with one `error:` line before any run folder or worker exists")
    assert not (tmp_path / "never").exists()


def test_resume_compares_weights_by_sha256_not_by_path(tmp_path):
    """A checkpoint records its frozen nets' sha256: the same file at another path (another node) resumes, other
    weights at the same path are refused in one line."""
    from repro import provenance
    from repro.config import ConfigError
    from repro.train import check_inputs, parse_args

    smoke = make_config("smoke")
    moved = json.loads(smoke.to_json()) | {"encoder_weights": "/another/node/alexnet_tv.pt"}
    for name, weights in (("same", provenance.weight_identity(smoke)),
                          ("other", {**provenance.weight_identity(smoke), "encoder": "0" * 64})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(smoke.to_json())
        checkpoint.save(folder / "checkpoints", 1, {"config": json.dumps(moved), "weights": weights})
    args = parse_args(["--resume", str(tmp_path / "same")])
    check_inputs(smoke, args, str(tmp_path / "same"))
    assert args.resume_from[0].exists()  # accepted: the same weights, found at another path
    with pytest.raises(ConfigError, match="trained with other weights than this run would load .*encoder 0000"):
        check_inputs(smoke, parse_args(["--resume", str(tmp_path / "other")]), str(tmp_path / "other"))


# ---- python -m repro.features -----------------------------------------------------------------------------
def test_features_cli_rejects_bad_arguments(tmp_path, capsys, assets, record_fault):
    from repro.features import main

    image = str(assets / "caffe" / "cat.jpg")
    out = ["--resolution", "64", "--out", str(tmp_path / "f.npz")]
    cases = [
        (["--net", "vgg", image], "invalid choice: 'vgg'"),
        (["--net", "alexnet", "--layer", "fc9", image], "unknown tap 'fc9' for alexnet"),
        (["--net", "alexnet", str(tmp_path / "missing.jpg")], "does not exist"),
        (["--net", "alexnet", str(tmp_path)], "holds no .jpg/.jpeg/.png files"),
        (["--net", "caffenet", image], "--net caffenet needs your bvlc_reference_caffenet"),
        (["--net", "caffenet", "--weights", str(tmp_path / "missing.caffemodel"), image], "does not exist"),
        (["--net", "caffenet", "--weights", str(TEXT), image], "is not a valid Caffe NetParameter"),
        (["--net", "onnx", "--weights", str(TEXT), image], "cannot read ONNX file"),
    ]
    for argv, reason in cases:
        assert_rejected(main, argv + out, capsys, reason)
    record_fault(f"{len(cases)} bad arguments to `python -m repro.features`",
                 "unknown net/layer, missing or empty image paths, missing weights, a text file as weights",
                 "nothing: exit 2 with one `error:` line")
    assert not (tmp_path / "f.npz").exists()


def test_features_cli_reports_an_undecodable_image(tmp_path, capsys, record_fault):
    from repro.features import main

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    record_fault("an undecodable image given to `python -m repro.features`", "a text file named .jpg",
                 "nothing: exit 2 with one `error:` line naming the file, no .npz written")
    assert_rejected(main, ["--net", "alexnet", "--resolution", "64", "--out", str(tmp_path / "f.npz"), str(broken)],
                    capsys, "cannot read image")


# ---- python -m converters ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet(assets):
    return assets / "lenet" / "lenet.prototxt", assets / "lenet" / "lenet_iter_10000.caffemodel"


def test_converters_cli_rejects_bad_arguments(tmp_path, capsys, lenet, record_fault):
    converters_main = pytest.importorskip("converters.__main__").main
    prototxt, caffemodel = map(str, lenet)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_text("hello\n")
    cases = [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["verify", prototxt, str(tmp_path / "missing.caffemodel")], "no such file"),
        (["verify", prototxt, str(TEXT)], "is not a valid Caffe NetParameter"),
        (["verify", str(TEXT), caffemodel], "is not a valid Caffe prototxt"),
        (["verify", prototxt], "give PROTOTXT CAFFEMODEL, or one .onnx file"),
        (["verify", prototxt, caffemodel, "--input-shape", "1,x"], "expected comma-separated integers"),
        (["torch", prototxt, str(TEXT), str(tmp_path / "out")], "is not a valid Caffe NetParameter"),
        (["caffe2onnx", prototxt, str(TEXT), str(tmp_path / "x.onnx")], "is not a valid Caffe NetParameter"),
        (["verify", str(bad_onnx)], "cannot read ONNX file"),  # protobuf's DecodeError used to be a traceback
        (["torch", str(bad_onnx), str(tmp_path / "out")], "cannot read ONNX file"),
    ]
    for argv, reason in cases:
        assert_rejected(converters_main, argv, capsys, reason)
    record_fault(f"{len(cases)} bad arguments to `python -m converters`",
                 "unknown command, missing file, a text file as caffemodel or prototxt, a bad --input-shape",
                 "nothing: exit 2 with one `error:` line; no output written")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


# ---- python -m repro.evaluate ------------------------------------------------------------------------------
def test_evaluate_cli_rejects_bad_arguments(tmp_path, capsys, foreign_run, record_fault):
    evaluate_main = pytest.importorskip("repro.evaluate").main
    _, corrupt = foreign_run
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "config.json").write_text("{ not json")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path)], "is not a run folder"),
        ([str(corrupt)], "has no intact checkpoint"),
        ([str(garbled)], "config.json is not JSON"),
        ([str(corrupt), "--n", "1"], "--n must be ≥ 2"),
        ([str(corrupt), "--device", "tpu"], "invalid choice: 'tpu'"),
    ]
    for argv, reason in cases:
        assert_rejected(evaluate_main, argv + ["--no-progress"], capsys, reason)
    record_fault(f"{len(cases)} bad arguments to `python -m repro.evaluate`",
                 "missing folder, not a run folder, a run whose only checkpoint is corrupt, a garbled "
                 "config.json, bad --n/--device", "nothing: exit 2 with one `error:` line")


# ---- the converter on damaged caffemodels ----------------------------------------------------------------
def weight_ranges(prototxt: Path, caffemodel: Path) -> list[tuple[str, int, int, int]]:
    """(layer, blob index, first byte, end byte) of each weight blob's packed float32 data in the file,
    found by searching the file for the bytes of the blobs the converter reads (each occurs once)."""
    from converters import caffe_blobs

    data = caffemodel.read_bytes()
    ranges = []
    for layer, blobs in caffe_blobs(prototxt, caffemodel).items():
        for index, blob in enumerate(blobs):
            raw = np.ascontiguousarray(blob, "<f4").tobytes()
            start = data.find(raw)
            assert start > 0 and data.find(raw, start + 1) < 0, f"{layer}[{index}] not found exactly once"
            ranges.append((layer, index, start, start + len(raw)))
    return ranges


@pytest.mark.slow
def test_fuzzed_lenet_caffemodel_never_gives_a_silently_wrong_model(lenet, tmp_path, request, record_fault):
    """50 seeded damaged copies of the real LeNet caffemodel. Each must end in a ConversionError naming the
    file or a layer, or in a model whose outputs equal OpenCV's Caffe importer on the same damaged file:

    - truncations (random, and at a layer record's boundary, which leaves valid protobuf): an error;
    - bytes overwritten outside the weights (names, types, shapes, tags, lengths, layer parameters): an
      error, or a model identical to the undamaged one (the byte was in a field Caffe ignores at test
      time, e.g. the data layer's source);
    - bits flipped inside the weights: a model, whose weights differ from the file's undamaged weights
      in exactly the flipped elements, with the values the flipped bytes spell (read independently with
      numpy), and whose outputs equal OpenCV's (relative 1e-4);
    - a weight set to NaN or inf: read as such; outputs equal onnxruntime's on our graph (OpenCV's kernels
      turn inf·0 into NaN where IEEE arithmetic gives 0, so it cannot be the reference there).
    """
    import cv2
    from converters import ConversionError, caffe_blobs, convert_caffe
    from converters.torch_convert import load_onnx_model
    from converters.verify import run_onnxruntime

    previous = cv2.utils.logging.getLogLevel()  # OpenCV's importer prints its own errors for files it refuses
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    request.addfinalizer(lambda: cv2.utils.logging.setLogLevel(previous))
    prototxt, caffemodel = lenet
    original = caffemodel.read_bytes()
    ranges = weight_ranges(prototxt, caffemodel)
    in_weights = np.zeros(len(original), bool)
    for _, _, start, end in ranges:
        in_weights[start:end] = True
    outside = np.flatnonzero(~in_weights)
    layer_starts = [m.start() for m in re.finditer(rb"\xa2\x06", original) if not in_weights[m.start()]]
    clean = caffe_blobs(prototxt, caffemodel)
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)

    def ours(path):
        conversion = convert_caffe(prototxt, path)
        net = load_onnx_model(conversion.model)
        with torch.no_grad():
            return conversion, net(torch.from_numpy(x), "ip2").numpy()

    def opencv(path):
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(path))
        net.setInput(x)
        return net.forward("ip2")

    _, reference = ours(caffemodel)
    rng = np.random.default_rng(2024)
    cases = [("truncated", int(rng.integers(0, len(original)))) for _ in range(10)]
    cases += [("truncated at a layer", start) for start in layer_starts[1:3]]
    cases += [("overwritten outside the weights", None)] * 18 + [("bits flipped in the weights", None)] * 18
    cases += [("weight set to NaN", float("nan")), ("weight set to inf", float("inf"))]
    outcomes: dict[str, int] = {}
    for trial, (kind, arg) in enumerate(cases):
        data = bytearray(original)
        flipped: list[int] = []
        if kind.startswith("truncated"):
            data = data[:arg]
        elif kind == "overwritten outside the weights":
            for position in rng.choice(outside, size=int(rng.integers(1, 3)), replace=False):
                data[position] = (data[position] + int(rng.integers(1, 256))) % 256  # always a different byte
        elif kind == "bits flipped in the weights":
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.choice(np.flatnonzero(in_weights)))
                data[position] ^= 1 << int(rng.integers(0, 8))
                flipped.append(position)
        else:
            start = next(r[2] for r in ranges if r[:2] == ("ip1", 0))
            position = start + 4 * int(rng.integers(0, 1000))
            data[position : position + 4] = np.float32(arg).tobytes()
            flipped.append(position)
        damaged = tmp_path / f"fuzz{trial:02d}.caffemodel"
        damaged.write_bytes(bytes(data))
        what = f"trial {trial} ({kind})"
        try:
            conversion, output = ours(damaged)
        except ConversionError as err:
            assert re.search(rf"fuzz{trial:02d}\.caffemodel|layer '", str(err)), f"{what}: {err}"
            assert not kind.startswith("bits"), f"{what}: finite weights with a valid structure refused: {err}"
            outcomes[f"{kind}: ConversionError"] = outcomes.get(f"{kind}: ConversionError", 0) + 1
            continue
        assert not kind.startswith("truncated"), f"{what}: a truncated file converted"
        if kind == "overwritten outside the weights":
            assert np.array_equal(output, reference), f"{what}: a changed model from a non-weight byte"
            label = "model identical to the undamaged one"
        else:  # the converted weights are the file's, element by element
            blobs = caffe_blobs(prototxt, damaged)
            for layer, index, start, end in ranges:
                got, was = blobs[layer][index].ravel(), clean[layer][index].ravel()
                expected = was.copy()
                for position in flipped:
                    if start <= position < end:
                        element = (position - start) // 4
                        expected[element] = np.frombuffer(bytes(data[start + 4 * element : start + 4 * element + 4]), "<f4")[0]
                assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), f"{what}: {layer}[{index}]"
            finite = all(np.isfinite(b).all() for bl in blobs.values() for b in bl)
            if finite:
                cv_output = opencv(damaged)
                scale = float(np.abs(cv_output).max())
                assert float(np.abs(output - cv_output).max()) <= 1e-4 * scale, f"{what}: differs from OpenCV"
                label = "model equal to OpenCV's on the damaged file"
            else:
                ort = run_onnxruntime(conversion.model, x, ["ip2"])["ip2"]
                assert np.array_equal(np.isnan(output), np.isnan(ort)), f"{what}: NaNs differ from onnxruntime"
                assert np.allclose(output, ort, rtol=1e-4, atol=1e-4, equal_nan=True), what
                label = "non-finite weight kept; model equal to onnxruntime"
        outcomes[f"{kind}: {label}"] = outcomes.get(f"{kind}: {label}", 0) + 1
    summary = "; ".join(f"{n}× {k}" for k, n in sorted(outcomes.items()))
    record_fault(f"{len(cases)} damaged copies of lenet_iter_10000.caffemodel", "seeded truncations, byte "
                 "overwrites outside the weights, bit flips in the weights, NaN/inf weights", summary)
    assert sum(outcomes.values()) == len(cases) == 50
    assert any("ConversionError" in k for k in outcomes) and any("OpenCV" in k for k in outcomes)


# ---- undecodable images ----------------------------------------------------------------------------------
def decompression_bomb() -> bytes:
    """A 300-byte PNG whose header claims 30000×30000 pixels: PIL refuses it with DecompressionBombError."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.fixture()
def folder_with_broken_images(tmp_path, assets):
    """6 real Caltech-101 images and 5 that cannot be decoded."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = list_images(assets / "caltech101" / "pizza")[:6]
    for i, path in enumerate(good):
        shutil.copy(path, folder / f"good{i}.jpg")
    broken = {
        "truncated.jpg": good[0].read_bytes()[:1500],
        "empty.jpg": b"",
        "text.png": b"this is not an image\n",
        "random.jpg": np.random.default_rng(0).bytes(5000),
        "bomb.png": decompression_bomb(),
    }
    for name, data in broken.items():
        (folder / name).write_bytes(data)
    return folder, set(broken)


def test_epoch_over_broken_images_completes(folder_with_broken_images, caplog, record_fault):
    folder, broken = folder_with_broken_images
    dataset = ImageFolder(folder, resolution=64, train=True)
    with caplog.at_level(logging.WARNING, logger="repro.data"):
        batches = list(make_loader(dataset, batch_size=1, seed=0, num_workers=0))  # every file visited
    record_fault("5 undecodable images (truncated, empty, text, random bytes, a decompression bomb) among 6 good",
                 "one epoch of `make_loader` over the folder, in-process and with 2 loader workers",
                 "nothing but the 5 files, each reported by path")
    assert len(batches) == len(dataset) == 11 and all(b.shape == (1, 3, 64, 64) for b in batches)
    assert {p.name for p in dataset.bad} == broken
    for name in broken:
        assert f"skipping unreadable image {folder / name}" in caplog.text
    with_workers = list(make_loader(ImageFolder(folder, resolution=64), batch_size=1, seed=0, num_workers=2))
    assert len(with_workers) == len(batches) and all(torch.equal(a, b) for a, b in zip(batches, with_workers))


def test_training_over_broken_images_finishes(folder_with_broken_images, tmp_path, capsys, caplog, record_fault):
    from repro.train import main

    folder, broken = folder_with_broken_images
    with caplog.at_level(logging.WARNING, logger="repro.data"):
        status = main(["--launcher", "local", "--preset", "smoke", "--no-progress", "--run-dir", str(tmp_path / "run"),
                       "--set", f"train_data={folder}", "--set", "steps=4", "--set", "threads=1",
                       "--set", "checkpoint_every=4", "--set", "image_every=1000"])
    reported = {name for name in broken if str(folder / name) in caplog.text}
    record_fault("training on a folder with undecodable images",
                 "`python -m repro.train --set train_data=FOLDER --set steps=4` (4 steps = 16 of 11 files)",
                 f"nothing: finished; {len(reported)} broken files met and reported")
    assert status == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["status"] == "finished"
    assert reported, caplog.text
