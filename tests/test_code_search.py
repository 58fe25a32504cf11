"""Code search over generator codes (`repro.code_search`, `repro.scorers`, `python -m repro.synthesize --optimizer`),
on a tiny generator the tests build, a small fixed classifier, and scorer processes the tests start."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from repro.code_search import (CMAES, CMASettings, Genetic, GeneticSettings, GradientAscent, Settings,
                               grid_generations, search, settings_record)
from repro.generator_file import save_generator
from repro.nets.generator import Generator
from repro.scorers import FileExchangeScorer, ScorerError, UnitScorer, checked_scores, scorer_from_spec
from repro.synthesize import main
from tiny_classifier import Scores

pytestmark = pytest.mark.usefixtures("one_thread")
UNIT = 11  # a unit of Scores (tiny_classifier) that random codes leave near 0.34 ± 0.007 (below)




@pytest.fixture(scope="module")
def generator():
    """A DeePSiM generator (pool5 code 256×1×1 → 64 px), seeded; its last layer scaled ×10 so that codes change
    the image as much as a trained generator's do (an untrained one draws nearly the same image for every code)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        g = Generator((256, 1, 1), resolution=64, width=0.125, output_space="pipeline").eval()
    with torch.no_grad():
        [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1].weight.mul_(10)
    return g


@pytest.fixture(scope="module")
def scorer():
    return UnitScorer(Scores(), "scores", UNIT, name="scores:11")


def random_search_best(generator, scorer, budget: int, seed: int = 100) -> tuple[float, float]:
    """(max, std) of the unit's score on `budget` codes ~ N(0, I): what an optimiser must beat."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scores = scorer(generator(torch.randn(budget, *generator.in_shape, generator=rng)).clamp(0, 1))
    return scores.max().item(), scores.std().item()


def make(name: str, in_shape, seed: int = 0, budget: int = 240):
    if name == "genetic":
        return Genetic(in_shape, GeneticSettings(seed=seed))
    if name == "cmaes":
        return CMAES(in_shape, CMASettings(seed=seed))
    return GradientAscent(in_shape, Settings(steps=budget // 8, seed=seed), population=1)


@pytest.mark.parametrize("name", ["genetic", "cmaes", "gradient"])
def test_each_optimiser_beats_random_codes_within_a_small_budget(generator, scorer, name):
    optimizer = make(name, generator.in_shape)
    generations = 240 // optimizer.population if name != "gradient" else 30
    torch.manual_seed(7)
    np.random.seed(7)
    before = torch.rand(1), np.random.rand()
    torch.manual_seed(7)
    np.random.seed(7)
    result = search(generator, scorer, optimizer, generations, progress=False)
    assert (torch.rand(1), np.random.rand()) == before, "the search must leave the global RNGs alone"
    random_best, random_std = random_search_best(generator, scorer, 240)
    first = result["rows"][0]["best"]
    assert result["best_score"] > random_best + 2 * random_std, (name, first, result["best_score"], random_best)
    assert result["best_score"] > first + 0.02
    rows = result["rows"]
    assert [r["best_so_far"] for r in rows] == sorted(r["best_so_far"] for r in rows)
    assert rows[-1]["images_scored"] == generations * optimizer.population
    # the saved best code gives the saved best score again
    with torch.no_grad():
        again = scorer(generator(result["best_code"][None]).clamp(0, 1)).item()
    assert again == pytest.approx(result["best_score"], abs=1e-5)


def test_genetic_keeps_the_best_and_children_come_from_ranked_parents():
    shape = (3, 1, 1)
    ga = Genetic(shape, GeneticSettings(population=6, mutation_rate=0.0, heritability=1.0, keep=2, seed=0))
    codes = ga.ask()
    scores = torch.tensor([0.0, 5.0, 1.0, 4.0, 2.0, 3.0])
    ga.tell(scores)
    new = ga.ask()
    assert torch.equal(new[0], codes[1]) and torch.equal(new[1], codes[3]), "the 2 best pass unchanged, best first"
    # heritability 1 and no mutation: every child is a copy of one parent of the last generation
    assert all(any(torch.equal(child, parent) for parent in codes) for child in new[2:])
    # the fitness rule: exp((clipped score − top) / kT), kT = std / selectivity; the top clipped at the 95th percentile
    order, fitness = ga.fitness(scores.double())
    ranked = scores.double()[order]
    top = torch.quantile(ranked, 0.95)
    expected = torch.exp((ranked.clamp(max=top) - top) / (ranked.std(unbiased=False) / 2.0))
    assert order.tolist() == [1, 3, 5, 4, 2, 0] and torch.allclose(fitness, expected)
    # mutations move about mutation_rate of the elements by N(0, mutation_size²)
    ga = Genetic((2000,), GeneticSettings(population=4, mutation_rate=0.5, mutation_size=0.5, heritability=1.0,
                                          keep=0, seed=1))
    ga.codes = torch.zeros(4, 2000)
    ga.tell(torch.arange(4.0))
    changed = ga.codes != 0
    assert 0.45 < changed.float().mean() < 0.55
    assert ga.codes[changed].std().item() == pytest.approx(0.5, rel=0.05)


def test_cmaes_is_a_function_of_its_seed_and_the_scores():
    a, b, c = (CMAES((5, 2), CMASettings(seed=s, population=6)) for s in (3, 3, 4))
    assert a.population == 6 and a.ask().shape == (6, 5, 2)
    assert torch.equal(a.ask(), b.ask()) and not torch.equal(a.ask(), c.ask())
    default = CMAES((256, 1, 1))
    assert default.population == 4 + int(3 * np.log(256)), "cma's default population"
    assert default.es.opts["CMA_diagonal"] is False
    assert CMAES((4097,)).es.opts["CMA_diagonal"] is True, "sep-CMA above 4096 dimensions"


def test_grid_generations_spread_over_the_run():
    assert grid_generations(5) == [0, 1, 2, 3, 4]
    picked = grid_generations(1000)
    assert len(picked) == 64 and picked[0] == 0 and picked[-1] == 999


@pytest.mark.parametrize("name", ["genetic", "cmaes", "gradient"])
def test_a_resumed_search_gives_the_same_codes_and_scores(generator, scorer, name, tmp_path):
    generations = 6
    whole = search(generator, scorer, make(name, generator.in_shape, budget=48), generations, tmp_path / "whole",
                   progress=False, settings={"name": name})

    calls = {"n": 0}

    def failing(images, ids=None, batch="b"):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ScorerError("the recording rig went away")
        return scorer(images, ids, batch)

    out = tmp_path / "resumed"
    with pytest.raises(ScorerError):
        search(generator, failing, make(name, generator.in_shape, budget=48), generations, out, progress=False,
               settings={"name": name})
    saved = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in saved] == [0, 1, 2], "the 3 finished generations are kept"
    assert (out / "best.pt").exists() and (out / "best-per-generation.png").exists()
    with pytest.raises(ValueError, match="other settings"):
        search(generator, scorer, make(name, generator.in_shape, budget=48), generations, out, progress=False,
               settings={"name": "another"})
    resumed = search(generator, scorer, make(name, generator.in_shape, budget=48), generations, out,
                     progress=False, settings={"name": name})
    assert torch.equal(resumed["best_codes"], whole["best_codes"])
    assert torch.equal(resumed["best_scores"], whole["best_scores"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(resumed["rows"]) == strip(whole["rows"])
    lines = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in lines] == list(range(generations))
    best = torch.load(out / "best.pt", weights_only=True)
    assert torch.equal(best["code"], whole["best_code"]) and best["score"] == whole["best_score"]


def test_checked_scores_refuse_wrong_counts_and_nan():
    assert checked_scores([1, 2], 2, "s").dtype == torch.float64
    assert checked_scores(torch.ones(3, 1), 3, "s").shape == (3,)
    for bad, reason in [([1.0], "shape (1,) for 2 images"), ([1.0, float("nan")], "non-finite"),
                        ("ab", "not 2 numbers"), (torch.ones(2, 2), "shape (2, 2)")]:
        with pytest.raises(ScorerError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            checked_scores(bad, 2, "s")


def test_scorer_specs(tmp_path, monkeypatch):
    assert isinstance(scorer_from_spec(f"files:{tmp_path}"), FileExchangeScorer)
    module = tmp_path / "my_scores.py"
    module.write_text("def red(images):\n    return images[:, 0].mean((1, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    python = scorer_from_spec("my_scores:red")
    assert python(torch.ones(2, 3, 8, 8)).tolist() == [1.0, 1.0]
    for spec, reason in [("nosuchmodule:fn", "not an importable module"), ("my_scores:blue", "no function 'blue'"),
                         ("squeezenet", "NET:UNIT or NET:TAP:UNIT"), ("nonsense", "unknown scorer"),
                         ("squeezenet:pool_final:x", "NET:TAP:UNIT"),
                         ("alexnet-random:nosuchtap:1", "unknown tap"), ("files:", "needs a folder"),
                         ("caffenet:fc8:1", "needs the original weights")]:
        with pytest.raises(ScorerError, match=reason):
            scorer_from_spec(spec)


SCORER_PROCESS = textwrap.dedent("""
    # A closed-loop scorer as another lab's process would be: watch the folder, score each new generation
    # (mean red minus mean blue of the 8-bit PNG), answer in any order, atomically.
    import sys, time
    from pathlib import Path
    import numpy as np
    from PIL import Image

    folder, batches = Path(sys.argv[1]), int(sys.argv[2])
    done = set()
    deadline = time.time() + 120
    while len(done) < batches and time.time() < deadline:
        for batch in sorted(folder.glob("gen*")):
            if batch.name in done or not batch.is_dir() or "." in batch.name:
                continue
            ids = (batch / "ids.txt").read_text().split()
            lines = ["id,score"]
            for image_id in reversed(ids):
                pixels = np.asarray(Image.open(batch / f"{image_id}.png"), dtype=np.float64) / 255
                lines.append(f"{image_id},{pixels[..., 0].mean() - pixels[..., 2].mean():.17g}")
            (batch / "scores.csv.tmp").write_text("\\n".join(lines) + "\\n")
            (batch / "scores.csv.tmp").rename(batch / "scores.csv")
            done.add(batch.name)
        time.sleep(0.02)
""")


def test_file_exchange_round_trips_with_a_scorer_process(generator, tmp_path):
    script = tmp_path / "scorer_process.py"
    script.write_text(SCORER_PROCESS)
    folder = tmp_path / "exchange"
    generations = 3
    process = subprocess.Popen([sys.executable, str(script), str(folder), str(generations)])
    try:
        scorer = FileExchangeScorer(folder, timeout_s=60, poll_s=0.02)
        result = search(generator, scorer, Genetic(generator.in_shape, GeneticSettings(population=8)), generations,
                        progress=False)
    finally:
        process.wait(timeout=60)
    assert process.returncode == 0
    assert sorted(p.name for p in folder.iterdir()) == ["gen0000", "gen0001", "gen0002"]
    ids = (folder / "gen0001" / "ids.txt").read_text().split()
    assert ids == [f"gen0001_{i:06d}" for i in range(8, 16)]
    # the scores came back to the right images: recompute them from the codes, through 8-bit quantisation
    with torch.no_grad():
        image = generator(result["best_codes"][1:2]).clamp(0, 1)[0]
    quantised = image.mul(255).add(0.5).clamp(0, 255).floor() / 255
    expected = (quantised[0].mean() - quantised[2].mean()).item()
    assert result["best_scores"][1].item() == pytest.approx(expected, abs=1e-6)


def test_file_exchange_errors_name_the_ids_and_the_file(tmp_path):
    scorer = FileExchangeScorer(tmp_path, timeout_s=0.2, poll_s=0.02)
    images = torch.rand(3, 3, 8, 8)
    with pytest.raises(ScorerError, match=r"no scores file .*gen0000/scores.csv after 0.2 s"):
        scorer(images, ["a", "b", "c"], batch="gen0000")
    path = tmp_path / "scores.csv"
    for text, reason in [("a,1\nb,2\n", r"1 id\(s\) missing \(c\)"), ("a,1\nb,2\nc,3\nd,4\n", "not in this batch \\(d\\)"),
                         ("a,1\nb,nan\nc,3\n", "non-finite .* for b"), ("a,1\na,2\nc,3\n", "scores image 'a' twice"),
                         ("a;1\n", "line 1 is not `id,score`")]:
        path.write_text(text)
        with pytest.raises(ScorerError, match=reason):
            scorer.read_scores(path, ["a", "b", "c"])
    path.write_text("id,score\nc,3\na,1\nb,2\n")
    assert scorer.read_scores(path, ["a", "b", "c"]) == [1.0, 2.0, 3.0]
    # a second attempt at the same batch (a resumed run) moves the first aside
    with pytest.raises(ScorerError):
        scorer(images, ["a", "b", "c"], batch="gen0000")
    assert (tmp_path / "gen0000.old-1" / "ids.txt").exists() and (tmp_path / "gen0000" / "ids.txt").exists()


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory, generator):
    path = tmp_path_factory.mktemp("gen") / "tiny.generator.pt"
    save_generator(path, generator, encoder="alexnet-random", tap="pool5", config={"seed": 3})
    return path


FLAKY_MODULE = textwrap.dedent("""
    import torch

    calls = {"n": 0}
    FAIL_AT = None  # the call (1-based) that answers NaN

    def blue(images):
        calls["n"] += 1
        scores = images[:, 2].mean((1, 2)) - images[:, 0].mean((1, 2))
        if calls["n"] == FAIL_AT:
            scores[1] = float("nan")
        return scores

    def short(images):
        return blue(images)[:-1]

    def as_list(images):  # numbers without a graph
        return blue(images).tolist()
""")


def test_cli_search_fails_mid_run_keeps_its_generations_and_resumes_identically(generator_file, tmp_path,
                                                                               monkeypatch, capsys):
    (tmp_path / "flaky_scores.py").write_text(FLAKY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import flaky_scores

    base = ["--generator", str(generator_file), "--scorer", "flaky_scores:blue", "--optimizer", "cmaes",
            "--population", "6", "--budget", "30", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "whole")]) == 0
    assert "cmaes: best score" in capsys.readouterr().out
    flaky_scores.calls["n"], flaky_scores.FAIL_AT = 0, 3
    out = tmp_path / "run"
    assert main(base + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "non-finite" in err and "--resume" in err, err
    assert len((out / "stats.jsonl").read_text().splitlines()) == 2
    assert main(["--resume", str(out), "--budget", "60"]) == 2, "a resumed run keeps its own settings"
    assert "drop --budget" in capsys.readouterr().err
    assert main(["--resume", str(out), "--no-progress"]) == 0
    record = json.loads((out / "search.json").read_text())
    assert record["finished"] and record["resumed"][0]["from_generation"] == 2
    assert record["generator_sha256"] and record["settings"]["population"] == 6 and record["images_scored"] == 30
    whole = [json.loads(line) for line in (tmp_path / "whole" / "stats.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["best"] for r in resumed] == [r["best"] for r in whole] and len(whole) == 5
    assert torch.equal(torch.load(out / "best.pt", weights_only=True)["code"],
                       torch.load(tmp_path / "whole" / "best.pt", weights_only=True)["code"])
    for name in ("best.png", "best-per-generation.png", "state.pt"):
        assert (out / name).is_file()
    assert any((out / "tensorboard").iterdir())
    assert main(base + ["--out", str(out)]) == 2 and "already holds a search" in capsys.readouterr().err


def test_cli_bad_search_inputs_exit_2(generator_file, tmp_path, monkeypatch, capsys):
    (tmp_path / "flaky_scores2.py").write_text(FLAKY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["--generator", str(generator_file), "--out", str(tmp_path / "o"), "--no-progress"]
    for argv, reason in [
        (["--scorer", "nosuchmodule:fn", "--budget", "40"], "unknown scorer"),
        (["--scorer", "flaky_scores2:short", "--budget", "40"], "shape (19,) for 20 images"),
        (["--scorer", f"files:{tmp_path / 'x'}", "--exchange-timeout", "0.1", "--budget", "40"], "no scores file"),
        (["--scorer", "flaky_scores2:blue", "--budget", "19"], "below one generation of 20 images"),
        (["--scorer", "flaky_scores2:as_list", "--optimizer", "gradient", "--no-bounds", "--budget", "4"],
         "needs scores with gradients"),
        (["--scorer", f"files:{tmp_path / 'x'}", "--optimizer", "gradient", "--budget", "4"], "no gradient"),
        (["--scorer", "flaky_scores2:blue"], "--budget"),
        (["--scorer", "flaky_scores2:blue", "--budget", "40", "--steps", "3"], "--steps is for the plain"),
        (["--resume", str(tmp_path / "nothing")], "not a search run folder"),
    ]:
        capsys.readouterr()
        assert main(argv if argv[0] == "--resume" else base + argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and reason in err, (argv, err)
        for leftover in (tmp_path / "o").glob("state.pt"):
            leftover.unlink()


def test_cli_gradient_search_on_a_registry_unit(generator_file, tmp_path):
    out = tmp_path / "g"
    assert main(["--generator", str(generator_file), "--classifier", "alexnet-random", "--tap", "conv5",
                 "--unit", "3", "--optimizer", "gradient", "--no-bounds", "--budget", "4", "--out", str(out),
                 "--no-progress"]) == 0
    record = json.loads((out / "search.json").read_text())
    assert record["scorer"] == "alexnet-random:conv5:3" and record["settings"]["steps"] == 4
    assert len((out / "stats.jsonl").read_text().splitlines()) == 4
    assert settings_record(GradientAscent((2,), Settings(steps=4)))["optimizer"] == "gradient"


def test_comparison_table_and_plot_from_curves():
    from repro.compare_optimizers import best_at, plot, table

    curves = [{"optimizer": o, "unit": 1, "seed": s, "images": [20, 40, 60, 80], "best_so_far": [1.0 + s, 2.0, 3.0, 4.0 + s]}
              for o in ("genetic", "cmaes") for s in (0, 1)]
    assert best_at(curves[0], 59) == 2.0 and best_at(curves[0], 80) == 4.0 and best_at(curves[0], 19) != best_at(curves[0], 19)
    text = table(curves, {1: {"score": 9.0, "file": "n1.jpg"}}, {1: "goldfish"}, 80, [0, 1])
    assert "| 1 goldfish | 9.00 (n1.jpg) | genetic | 1.50 ± 0.71 | 2.00 ± 0.00 | 4.50 ± 0.71 | 0.50 |" in text, text
    assert "genetic 0.50, cmaes 0.50" in text
    image = plot(curves, {1: {"score": 9.0}}, {1: "goldfish"}, 80)
    assert image.size == (320, 266)


@pytest.mark.slow
def test_comparison_command_end_to_end(generator_file, assets, tmp_path):
    import shutil

    from PIL import Image

    from repro.compare_optimizers import OPTIMIZERS
    from repro.compare_optimizers import main as compare_main

    natural = tmp_path / "natural"
    natural.mkdir()
    for path in sorted((assets / "imagenet-1k-256").iterdir())[:3]:
        shutil.copy(path, natural / path.name)
    out = tmp_path / "cmp"
    assert compare_main(["--generator", str(generator_file), "--units", "1", "--seeds", "0", "--budget", "24",
                         "--natural", str(natural), "--out", str(out)]) == 0
    record = json.loads((out / "provenance.json").read_text())
    assert record["generator_sha256"] and record["budget"] == 24 and set(record["optimizers"]) == set(OPTIMIZERS)
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert {c["optimizer"] for c in curves} == set(OPTIMIZERS) and all(c["images"][-1] <= 24 for c in curves)
    assert "1 goldfish" in (out / "results.md").read_text()
    assert Image.open(out / "curves.webp").format == Image.open(out / "best-images.webp").format == "WEBP"

