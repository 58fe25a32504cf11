"""Activation maximisation through a generator (`repro.synthesize`), on generators the tests make themselves."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.comparators import build_comparator, build_net
from repro.generator_file import save_generator
from repro.models import feature_shape
from repro.nets.generator import Generator
from repro.synthesize import Objective, Settings, code_bounds, main, synthesize, unit_activations
from tiny_classifier import Scores

pytestmark = pytest.mark.usefixtures("one_thread")
RESOLUTION = 64


@pytest.fixture(scope="module")
def generator():
    encoder = build_comparator("alexnet-random", "pool5", RESOLUTION, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return Generator(feature_shape(encoder, RESOLUTION), resolution=RESOLUTION, width=0.125).eval()




@pytest.fixture(scope="module")
def objective():
    return Objective(Scores(), "scores", None)


def test_unit_activations_reads_the_unit_and_the_centre_of_maps():
    scores = torch.arange(12.0).view(2, 6)
    assert unit_activations(scores, torch.tensor([1, 4])).tolist() == [1.0, 10.0]
    maps = torch.zeros(1, 3, 5, 5)
    maps[0, 2, 2, 2] = 7.0
    maps[0, 2, 0, 0] = 9.0
    assert unit_activations(maps, torch.tensor([2])).item() == 7.0


def test_the_unit_fires_more_and_specifically(generator, objective):
    settings = Settings(steps=25, seed=0)
    torch.manual_seed(7)
    before = torch.rand(2)
    torch.manual_seed(7)
    result = synthesize(generator, objective, [3, 11], settings, progress=False)
    assert torch.equal(torch.rand(2), before), "synthesize must not use the global RNG"
    assert (result["end"] > result["start"] + 1e-3).all(), (result["start"], result["end"])
    with torch.no_grad():
        scores = objective(generator(result["codes"]))
    # each image drives its own unit above what the other image gives it
    assert scores[0, 3] > scores[1, 3] and scores[1, 11] > scores[0, 11], scores[:, [3, 11]]
    again = synthesize(generator, objective, [3, 11], settings, progress=False)
    assert torch.equal(again["codes"], result["codes"]), "same seed, same codes"


def test_codes_stay_within_the_bounds_after_the_decay(generator, objective):
    lower = torch.zeros(generator.in_shape)
    upper = torch.full(generator.in_shape, 0.5)
    result = synthesize(generator, objective, [0], Settings(steps=5, decay=0.9), bounds=(lower, upper), progress=False)
    assert result["codes"].min() >= 0 and result["codes"].max() <= 0.5 * 0.9 + 1e-6
    assert result["codes"].max() > 0.4, "the step is large enough to reach the bound"


def test_code_bounds_are_multiples_of_the_range_on_images():
    codes = torch.tensor([[0.0, -1.0, 2.0], [1.0, 0.5, 4.0]])
    lower, upper = code_bounds(lambda x: x, codes, 3.0)
    assert lower.tolist() == [0.0, -3.0, 0.0] and upper.tolist() == [3.0, 1.5, 12.0]


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory, generator):
    path = tmp_path_factory.mktemp("gen") / "tiny.generator.pt"
    save_generator(path, generator, encoder="alexnet-random", tap="pool5", config={"seed": 3})
    return path


@pytest.mark.slow
def test_cli_with_the_real_squeezenet(generator_file, tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["--generator", str(generator_file), "--classifier", "squeezenet", "--unit", "945", "--unit", "1",
                 "--steps", "3", "--samples", "2", "--out", str(out)]) == 0
    record = json.loads((out / "synthesize.json").read_text())
    assert record["tap"] == "pool_final" and [u["unit"] for u in record["units"]] == [945, 1]
    assert record["bounds"]["count"] == 64, "bounds from the file's encoder on 64 evaluation images"
    assert (out / "unit-945.png").is_file() and (out / "grid.png").is_file()
    assert "unit 945: activation" in capsys.readouterr().out
    # without the clipping (which first pulls the N(0, I) start into the codes' range) the unit must rise
    assert main(["--generator", str(generator_file), "--classifier", "squeezenet", "--unit", "945", "--no-bounds",
                 "--steps", "10", "--out", str(out)]) == 0
    unit = json.loads((out / "synthesize.json").read_text())["units"][0]
    assert unit["end"][0] > unit["start"][0] * 1.05, unit


def test_cli_bad_inputs_exit_2(generator_file, generator, tmp_path, capsys):
    caffenet_file = tmp_path / "caffenet.generator.pt"
    save_generator(caffenet_file, generator, encoder="caffenet", tap="pool5")  # an encoder only the user has
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    for argv, reason in [
        (["--generator", str(junk), "--unit", "1"], "not a generator file"),
        (["--generator", str(generator_file), "--classifier", "squeezenet", "--unit", "1000"], "out of range"),
        (["--generator", str(generator_file), "--classifier", "caffenet", "--unit", "1"], "needs the original weights"),
        (["--generator", str(caffenet_file), "--classifier", "alexnet", "--tap", "conv5", "--unit", "1"], "--encoder-weights"),
    ]:
        capsys.readouterr()
        assert main(argv + ["--out", str(tmp_path / "o"), "--steps", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err, err
