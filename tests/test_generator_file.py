"""Generator files (`repro.generator_file`) and `python -m repro.invert`, on files the tests write themselves."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repro.comparators import build_comparator
from repro.generator_file import GeneratorFileError, load_generator, save_generator, state_sha256
from repro.invert import main as invert_main
from repro.models import Inverter, feature_shape
from repro.nets.generator import Generator

pytestmark = pytest.mark.usefixtures("one_thread")
RESOLUTION = 64


@pytest.fixture(scope="module")
def encoder():
    return build_comparator("alexnet-random", "pool5", RESOLUTION, seed=3)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory, encoder):
    torch.manual_seed(1)
    generator = Generator(feature_shape(encoder, RESOLUTION), resolution=RESOLUTION, width=0.125).eval()
    path = tmp_path_factory.mktemp("gen") / "tiny.generator.pt"
    save_generator(path, generator, encoder="alexnet-random", tap="pool5", config={"seed": 3},
                   source={"test": "tiny"})
    return path, generator


@pytest.fixture(scope="module")
def images(assets):
    folder = assets / "imagenet-1k-256"
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:3]


def test_round_trip_is_exact_and_leaves_the_global_rng_alone(generator_file):
    path, generator = generator_file
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    loaded = load_generator(path)
    assert torch.equal(torch.rand(3), expected_draw), "loading must not consume the global RNG"
    assert loaded.encoder == "alexnet-random" and loaded.tap == "pool5" and loaded.resolution == RESOLUTION
    code = torch.randn(2, *generator.in_shape)
    with torch.no_grad():
        assert torch.equal(loaded.generator(code), generator(code))
    assert not any(p.requires_grad for p in loaded.generator.parameters())
    assert path.stat().st_size < 2_000_000, "a generator file holds G only"


def test_a_pipeline_space_generator_round_trips(tmp_path):
    """output_space="pipeline" holds a 0-d buffer (its grey offset): hashed like any other tensor."""
    torch.manual_seed(2)
    generator = Generator((8, 1, 1), resolution=RESOLUTION, width=0.125, output_space="pipeline").eval()
    assert any(t.dim() == 0 for t in generator.state_dict().values())
    path = tmp_path / "pipeline.generator.pt"
    save_generator(path, generator, encoder="alexnet-random", tap="pool5")
    code = torch.randn(2, 8, 1, 1)
    with torch.no_grad():
        assert torch.equal(load_generator(path).generator(code), generator(code))


def test_half_precision_file_is_smaller_and_close(generator_file, tmp_path):
    path, generator = generator_file
    half = tmp_path / "half.generator.pt"
    save_generator(half, generator, encoder="alexnet-random", tap="pool5", half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    code = torch.randn(2, *generator.in_shape)
    with torch.no_grad():
        diff = (load_generator(half).generator(code) - generator(code)).abs().max().item()
    assert 0 < diff < 1e-2, diff


def test_bad_files_are_refused_with_a_reason(generator_file, tmp_path):
    path, _ = generator_file
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(GeneratorFileError, match="not a generator file"):
        load_generator(junk)
    checkpoint_like = tmp_path / "state.pt"
    torch.save({"model": {}, "step": 3}, checkpoint_like)
    with pytest.raises(GeneratorFileError, match="run checkpoint"):
        load_generator(checkpoint_like)
    data = torch.load(path, weights_only=True)
    name = next(k for k in data["state_dict"] if k.endswith("weight"))
    data["state_dict"][name] = data["state_dict"][name] + 1e-3
    tampered = tmp_path / "tampered.pt"
    torch.save(data, tampered)
    with pytest.raises(GeneratorFileError, match="corrupt"):
        load_generator(tampered)
    data["sha256"] = state_sha256(data["state_dict"])
    data["generator"]["width"] = 0.25  # the weights no longer fit what the file describes
    torch.save(data, tampered)
    with pytest.raises(GeneratorFileError, match="do not fit"):
        load_generator(tampered)


def test_inverter_from_file_equals_encoder_then_generator(generator_file, encoder, images):
    path, generator = generator_file
    from repro.data import load_images

    x = load_images(images[:2], RESOLUTION)
    inverter = Inverter.from_file(str(path))
    with torch.no_grad():
        ours = inverter(x)[0]
        expected = generator(encoder(x).reshape(2, *generator.in_shape))
    assert torch.allclose(ours, expected, atol=1e-5)


def test_invert_cli_writes_side_by_side_pairs(generator_file, images, tmp_path):
    path, generator = generator_file
    out = tmp_path / "out"
    assert invert_main([str(p) for p in images[:2]] + ["--generator", str(path), "--out", str(out)]) == 0
    pair = Image.open(out / f"{images[0].stem}.png")
    assert pair.size == (2 * RESOLUTION + 6, RESOLUTION + 4), "original | reconstruction with 2 px padding"
    assert (out / "grid.png").is_file()


def test_invert_cli_from_features(generator_file, tmp_path):
    path, generator = generator_file
    codes = np.random.default_rng(0).random((3, *generator.in_shape), dtype=np.float32)
    npz = tmp_path / "f.npz"
    np.savez(npz, features=codes, paths=np.array(["a/x.jpg", "b/y.jpg", "c/z.jpg"]))
    out = tmp_path / "out"
    assert invert_main(["--features", str(npz), "--generator", str(path), "--out", str(out)]) == 0
    written = Image.open(out / "y.png")
    assert written.size == (RESOLUTION, RESOLUTION), "a single tile is saved without padding"
    with torch.no_grad():
        expected = generator(torch.from_numpy(codes[1:2])).clamp(0, 1)[0]
    got = torch.from_numpy(np.asarray(written, np.float32) / 255).permute(2, 0, 1)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6


def test_invert_cli_bad_inputs_exit_2_with_one_line(generator_file, images, tmp_path, capsys):
    path, generator = generator_file
    out = tmp_path / "out"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 10)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=np.zeros((2, 7), np.float32))
    cases = [
        ([str(images[0]), "--generator", str(junk), "--out", str(out)], "is not a generator file"),
        ([str(broken), "--generator", str(path), "--out", str(out)], "cannot read image"),
        ([str(tmp_path / "nowhere"), "--generator", str(path), "--out", str(out)], "does not exist"),
        (["--features", str(wrong), "--generator", str(path), "--out", str(out)], r"have shape \(2, 7\)"),
        (["--generator", str(path), "--out", str(out)], "either IMAGES or --features"),
    ]
    for argv, reason in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) if "either" in reason else _returns(2):
            assert invert_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
        assert __import__("re").search(reason, err), (reason, err)
    assert not (out / "grid.png").exists()


class _returns:
    """Context manager standing in for pytest.raises when the call returns instead of raising."""

    def __init__(self, code: int):
        self.code = code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_half_precision_generator_file_inverts_images_through_the_encoder_it_names(images, tmp_path):
    """A float16 file (as `repro.publish --generator --half` writes) loads and inverts through the encoder it
    names: the pretrained AlexNet's pool5 at 96 px."""
    torch.manual_seed(2)
    path = tmp_path / "pool5.generator.pt"
    save_generator(path, Generator((256, 2, 2), resolution=96, width=0.125).eval(),  # AlexNet pool5 at 96 px
                   encoder="alexnet", tap="pool5", source={"step": 299}, half=True)
    loaded = load_generator(path)
    assert (loaded.encoder, loaded.tap, loaded.resolution, loaded.in_shape) == ("alexnet", "pool5", 96, (256, 2, 2))
    assert loaded.source["step"] == 299
    folder = tmp_path / "images" / "nested"  # an image folder, searched recursively
    folder.mkdir(parents=True)
    for p in images[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    assert invert_main([str(tmp_path / "images"), "--generator", str(path), "--out", str(out)]) == 0
    assert Image.open(out / f"{images[1].stem}.png").size == (2 * 96 + 6, 96 + 4)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{images[0].stem}.png", f"{images[1].stem}.png", "grid.png"])


def test_invert_asks_for_the_weights_of_an_encoder_that_needs_them(generator_file, tmp_path, images, capsys):
    _, generator = generator_file
    path = tmp_path / "caffenet-pool5.generator.pt"
    save_generator(path, generator, encoder="caffenet", tap="pool5")
    assert invert_main([str(images[0]), "--generator", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--encoder-weights" in err, err


def test_publish_exports_the_runs_generator(tmp_path):
    """`python -m repro.publish RUN --generator`: generator.pt holds the run's trained G, bit for bit in float32."""
    import json

    from repro.config import make_config
    from repro.loop import train
    from repro.publish import main as publish_main
    from repro.runs import load_run

    run = tmp_path / "run"
    config = make_config("smoke")
    train(config, run)
    (run / "config.json").write_text(config.to_json())  # these two are written by repro.train's CLI
    (run / "provenance.json").write_text(json.dumps({"command": "test"}))
    dest = tmp_path / "published"
    assert publish_main([str(run), str(dest), "--generator"]) == 0
    loaded = load_generator(dest / "generator.pt")
    trained = load_run(run, device="cpu").parts.model.generator
    assert loaded.source["step"] == 2 and loaded.config["preset"] == "smoke"
    code = torch.randn(2, *trained.in_shape)
    with torch.no_grad():
        assert torch.equal(loaded.generator(code), trained(code))


def test_invert_cli_refuses_a_device_it_cannot_use_in_one_line(generator_file, images, tmp_path, capsys):
    path, _ = generator_file
    out = tmp_path / "out"
    cases = [("tpu", "--device tpu: not a device; choose cpu, cuda or cuda:N")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "--device cuda but CUDA is unusable here"))
    for device, reason in cases:
        assert invert_main([str(images[0]), "--generator", str(path), "--out", str(out), "--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err
    assert not out.exists()


def test_inverter_refuses_images_of_another_side(generator_file, images):
    from repro.data import load_images
    from repro.errors import UsageError

    inverter = Inverter.from_file(str(generator_file[0]))
    with pytest.raises(UsageError, match=r"inverts 64×64 images, got shape \(1, 3, 96, 96\): .*load_images\(paths, 64\)"):
        inverter(load_images(images[:1], 96))
