"""Search over a generator's input codes for images a scorer prefers: with gradients or without.

Three optimisers share one ask/tell interface (`ask()` → codes (P, *code shape), `tell(scores)` with the P scores
of their images) and one loop (`search`), so that they are compared image for image:

- `GradientAscent`: Nguyen et al. 2016's step (see `repro.synthesize`), one step per generation of P codes. It
  needs the scores' gradient, so only a differentiable scorer (a network unit) serves it.
- `Genetic`: the genetic algorithm of XDream (Ponce, Xiao, Schade et al., Cell 2019; willwx/XDream,
  `Optimizers.Genetic`), which evolved the fc6 code of the DeePSiM generator so that a monkey's neuron fired.
  Written here from its description and code, with its settings:
    * fitness: scores ranked; kT = std(scores) / selectivity (floored at 1e-8); scores clipped at their 95th
      percentile (one outlier does not take every mating); fitness = exp((score − top score) / kT);
    * the best `keep` codes pass unchanged; each other member is a child of two parents drawn (with
      replacement) with probability ∝ fitness, taking each code element from the first parent with probability
      `heritability`, else from the second; each element then mutates with probability `mutation_rate` by
      N(0, mutation_size²); the first generation is N(0, I).
  Defaults: population 20, mutation rate 0.5, mutation size 0.5, selectivity 2, heritability 0.5: the values of
  every experiment script XDream ships (examples/demo.py, experiment_CNN.py, tests/, the closed-loop
  templates), for CNN units and neurons alike. keep = 1: their closed-loop (`EphysExperiment`) templates keep the
  best code of each generation (their CNN demos keep none); we take 1 because it makes the population's best
  never get lost to a mutation and, in closed loop, re-shows one known image per generation (a check of the
  recording's drift), for 1 image in 20.
- `CMAES`: CMA-ES (Hansen) through the `cma` package, as in later comparisons with XDream's GA (Wang & Ponce,
  GECCO 2022). Start: mean 0, σ0 = 1, so that the first generation is N(0, I) like the GA's; population: cma's
  default 4 + ⌊3 ln n⌋ for an n-dimensional code; the covariance is full up to 4096 code dimensions and diagonal
  (sep-CMA) above (a full one needs n² memory and n³ eigendecompositions; `diagonal=` decides). Scores are
  maximised (cma minimises −score). Its random numbers come from its own seeded numpy Generator (cma's `randn`
  option) and mirrored sampling is off, so a run is a function of the seed and the scores; the global numpy RNG
  is left as it was.

Resuming: every generation ends with `state.pt` written atomically; a resumed search continues from the last
complete generation and gives the same codes and scores as one that never stopped (same seed, same scorer).
GradientAscent and Genetic store their state (codes, torch RNG state); CMAES stores the scores it was told and
replays them into a fresh `cma` instance (its state is a Python object; replaying is exact, and keeps the file
loadable with `torch.load(weights_only=True)`).

A run folder (`search(..., out=DIR)`):
    state.pt                  the optimiser's state, the best code and score of each generation, the stats rows
    stats.jsonl               one row per generation: images scored, best / mean / median / min / std of its
                              scores, the best so far, wall time
    tensorboard/              the same scalars (x = images scored) and the best image of some generations
    best-per-generation.png   the best image of each generation (at most 64 generations, evenly spread)
    best.pt, best.png         the best code so far (+ its score and generation), and its image
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from repro.scorers import Scorer, ScorerError

STATE_FORMAT = "deepsim-code-search/1"
GRID_GENERATIONS = 64  # at most this many generations in best-per-generation.png


@dataclass(frozen=True)
class Settings:
    """Nguyen et al.'s settings for CaffeNet fc8 (1_activate_output.sh): the gradient method."""

    steps: int = 200          # iterations
    lr: float = 8.0           # step size at the first iteration …
    end_lr: float = 1e-10     # … decaying linearly to this
    decay: float = 0.99       # code ← decay · code after each step ("L2" in act_max.py)
    bound_multiplier: float = 3.0  # upper bound = this × the largest value each code unit takes on real images
    seed: int = 0             # start codes ~ N(0, I) from a torch.Generator with this seed


@dataclass(frozen=True)
class GeneticSettings:
    """XDream's genetic algorithm (see the module docstring for where each default comes from)."""

    population: int = 20        # codes per generation
    mutation_rate: float = 0.5  # probability that a code element of a child mutates
    mutation_size: float = 0.5  # standard deviation of a mutation
    selectivity: float = 2.0    # kT = std(scores) / selectivity: higher = only the best become parents
    heritability: float = 0.5   # share of a child's elements from its first parent (0.5 = uniform crossover)
    keep: int = 1               # best codes passed on unchanged (XDream's n_conserve)
    seed: int = 0               # first generation N(0, I) and all draws from a torch.Generator with this seed


@dataclass(frozen=True)
class CMASettings:
    """CMA-ES through `cma` (see the module docstring)."""

    population: int = 0            # codes per generation; 0 = cma's default 4 + ⌊3 ln n⌋
    sigma0: float = 1.0            # initial step size around the mean 0
    diagonal: bool | None = None   # diagonal covariance (sep-CMA); None = only above 4096 code dimensions
    seed: int = 0                  # seed of the numpy Generator that draws every sample


class GradientAscent:
    """Nguyen et al.'s gradient step on P codes at once (one step = one generation of P images)."""

    name = "gradient"
    needs_gradient = True

    def __init__(self, in_shape: tuple[int, ...], settings: Settings = Settings(), population: int = 1,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None = None, device: str | torch.device = "cpu"):
        self.in_shape, self.settings, self.population = tuple(in_shape), settings, population
        rng = torch.Generator().manual_seed(settings.seed)  # the caller's global RNG is left alone
        self.code = torch.randn((population, *self.in_shape), generator=rng).to(device)
        self.lower, self.upper = (b.to(device) for b in bounds) if bounds is not None else (None, None)
        self.step = 0
        self._asked: torch.Tensor | None = None

    def ask(self) -> torch.Tensor:
        self._asked = self.code.detach().requires_grad_(True)
        return self._asked

    def tell(self, scores: torch.Tensor) -> None:
        """scores: (P,) computed from the codes of the last `ask` with their autograd graph."""
        if not scores.requires_grad:
            raise ScorerError("the gradient optimiser needs scores with gradients (a network unit, or a Python "
                              "function written in torch); this scorer gives none: use --optimizer genetic or cmaes")
        s = self.settings
        lr = s.lr + (s.end_lr - s.lr) * self.step / s.steps
        (grad,) = torch.autograd.grad(scores.sum(), self._asked)  # rows are independent: each gets its own ∂a/∂y
        with torch.no_grad():
            scale = grad.abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, *[1] * len(self.in_shape))
            code = self._asked.detach() + lr * grad / scale
            if self.lower is not None:
                code = torch.maximum(torch.minimum(code, self.upper), self.lower)
            if 0 < s.decay < 1:
                code = code * s.decay
        self.code, self._asked, self.step = code, None, self.step + 1

    def state_dict(self) -> dict[str, Any]:
        return {"code": self.code.cpu(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.code = state["code"].to(self.code.device)
        self.step = int(state["step"])


class Genetic:
    """XDream's genetic algorithm over codes (module docstring); all randomness from one torch.Generator."""

    name = "genetic"
    needs_gradient = False

    def __init__(self, in_shape: tuple[int, ...], settings: GeneticSettings = GeneticSettings()):
        s = settings
        if s.population < 2 or not 0 <= s.keep < s.population:
            raise ValueError(f"genetic: population {s.population} must be ≥ 2 and keep {s.keep} in [0, population)")
        if not 0 <= s.mutation_rate <= 1 or s.mutation_size <= 0 or s.selectivity <= 0 or not 0 <= s.heritability <= 1:
            raise ValueError("genetic: mutation rate and heritability must lie in [0, 1], mutation size and "
                             "selectivity be > 0")
        self.in_shape, self.settings, self.population = tuple(in_shape), s, s.population
        self.rng = torch.Generator().manual_seed(s.seed)
        self.codes = torch.randn((s.population, *self.in_shape), generator=self.rng)

    def ask(self) -> torch.Tensor:
        return self.codes.clone()

    def fitness(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(order from best to worst, fitness of the ranked codes): exp((clipped score − top) / kT)."""
        order = torch.argsort(scores, descending=True, stable=True)
        ranked = scores[order]
        kT = max(ranked.std(unbiased=False).item() / self.settings.selectivity, 1e-8)
        ranked = ranked.clamp(max=torch.quantile(ranked, 0.95).item())  # an outlier does not win every mating
        return order, torch.exp((ranked - ranked[0]) / kT)

    def tell(self, scores: torch.Tensor) -> None:
        s = self.settings
        order, fitness = self.fitness(scores.detach().double().cpu())
        ranked = self.codes[order]
        children = s.population - s.keep
        parents = torch.multinomial(fitness, 2 * children, replacement=True, generator=self.rng).view(2, children)
        from_first = torch.rand((children, *self.in_shape), generator=self.rng) < s.heritability
        offspring = torch.where(from_first, ranked[parents[0]], ranked[parents[1]])
        mutates = torch.rand(offspring.shape, generator=self.rng) < s.mutation_rate
        offspring = offspring + mutates * s.mutation_size * torch.randn(offspring.shape, generator=self.rng)
        self.codes = torch.cat([ranked[: s.keep], offspring])

    def state_dict(self) -> dict[str, Any]:
        return {"codes": self.codes.clone(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codes = state["codes"].clone()
        self.rng.set_state(state["rng"])


@contextlib.contextmanager
def global_numpy_rng_untouched() -> Iterator[None]:
    """cma draws a (here unused) stochastic rounding from numpy's global RNG on every ask: put it back."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


class CMAES:
    """CMA-ES over flattened codes through `cma` (module docstring); the state is the scores told, replayed."""

    name = "cmaes"
    needs_gradient = False
    FULL_COVARIANCE_MAX_DIMS = 4096

    def __init__(self, in_shape: tuple[int, ...], settings: CMASettings = CMASettings()):
        with warnings.catch_warnings():  # cma warns on import that matplotlib (its plots) is missing: not used here
            warnings.simplefilter("ignore")
            import cma

        self.in_shape, self.settings = tuple(in_shape), settings
        n = math.prod(self.in_shape)
        diagonal = settings.diagonal if settings.diagonal is not None else n > self.FULL_COVARIANCE_MAX_DIMS
        self.rng = np.random.default_rng(settings.seed)
        opts = {"randn": lambda *shape: self.rng.standard_normal(shape), "seed": np.nan, "CMA_mirrors": 0,
                "CMA_diagonal": bool(diagonal), "verbose": -9, "verb_log": 0, "verb_disp": 0}
        if settings.population:
            opts["popsize"] = settings.population
        if settings.sigma0 <= 0 or (settings.population and settings.population < 2):
            raise ValueError(f"cmaes: sigma0 {settings.sigma0} must be > 0 and population ≥ 2")
        with global_numpy_rng_untouched():
            self.es = cma.CMAEvolutionStrategy(np.zeros(n), settings.sigma0, opts)
        self.population = int(self.es.popsize)
        self.told: list[list[float]] = []
        self._asked: list[np.ndarray] | None = None

    def ask(self) -> torch.Tensor:
        if self._asked is None:
            with global_numpy_rng_untouched():
                self._asked = self.es.ask()
        return torch.tensor(np.stack(self._asked), dtype=torch.float32).view(self.population, *self.in_shape)

    def tell(self, scores: torch.Tensor) -> None:
        if self._asked is None:
            self.ask()
        values = [float(v) for v in scores.detach().double().cpu()]
        with global_numpy_rng_untouched():
            self.es.tell(self._asked, [-v for v in values])  # cma minimises
        self.told.append(values)
        self._asked = None

    def state_dict(self) -> dict[str, Any]:
        return {"told": torch.tensor(self.told, dtype=torch.float64).view(len(self.told), self.population)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.told:
            raise RuntimeError("CMAES.load_state_dict replays the scores told: call it on a fresh instance")
        for scores in state["told"]:
            self.ask()
            self.tell(scores)


Optimizer = GradientAscent | Genetic | CMAES


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def grid_generations(generations: int, most: int = GRID_GENERATIONS) -> list[int]:
    """The generations whose best image goes into the grid: all, or `most` spread evenly (the last included)."""
    if generations <= most:
        return list(range(generations))
    return sorted({round(i * (generations - 1) / (most - 1)) for i in range(most)})


def summary_row(generation: int, population: int, scores: torch.Tensor, best_so_far: float,
                wall_s: float) -> dict[str, Any]:
    s = scores.detach().double().cpu()
    return {"generation": generation, "images_scored": (generation + 1) * population, "best": s.max().item(),
            "mean": s.mean().item(), "median": s.median().item(), "min": s.min().item(),
            "std": s.std(unbiased=False).item(), "best_so_far": best_so_far, "wall_s": round(wall_s, 2)}


class RunFolder:
    """The files of a search run (module docstring); every write leaves a consistent folder."""

    def __init__(self, out: Path, generator: nn.Module, generations: int, start: int, rows: list[dict[str, Any]]):
        from torch.utils.tensorboard import SummaryWriter

        self.out, self.generator = out, generator
        self.picked = grid_generations(generations)
        out.mkdir(parents=True, exist_ok=True)
        # a resumed run: stats.jsonl as the saved state has it (a row written after the last state is dropped)
        (out / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=rows[-1]["images_scored"] + 1 if rows else None)
        self.grid: dict[int, torch.Tensor] = {}

    def render(self, codes: torch.Tensor) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        with torch.no_grad():
            return self.generator(codes.to(device)).clamp(0, 1).cpu()

    def restore_grid(self, best_codes: torch.Tensor) -> None:
        keep = [g for g in self.picked if g < len(best_codes)]
        if keep:
            for g, image in zip(keep, self.render(best_codes[keep])):
                self.grid[g] = image

    def write(self, state: dict[str, Any], row: dict[str, Any], best_image: torch.Tensor) -> None:
        from torchvision.utils import save_image

        _save_atomic(state, self.out / "state.pt")  # first: whatever follows can be rebuilt from it
        with open(self.out / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        step = row["images_scored"]
        for key in ("best", "mean", "median", "best_so_far"):
            self.tb.add_scalar(f"search/{key}", row[key], step)
        g = row["generation"]
        if g in self.picked:
            self.grid[g] = best_image
            self.tb.add_image("search/best_image", best_image, step)
            save_image(torch.stack([self.grid[k] for k in sorted(self.grid)]), self.out / "best-per-generation.png",
                       nrow=min(8, len(self.grid)), padding=2, pad_value=1.0)
        self.tb.flush()
        if int(torch.argmax(state["best_scores"])) == g:  # a new best so far (the first of equals stays)
            _save_atomic({"code": state["best_codes"][g].clone(), "score": row["best"], "generation": g,
                          "images_scored": step}, self.out / "best.pt")
            save_image(best_image, self.out / "best.png")

    def close(self) -> None:
        self.tb.close()


def load_state(out: Path) -> dict[str, Any] | None:
    """The saved state of a run folder, or None when it has none (a fresh run)."""
    path = out / "state.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a code-search state (format {STATE_FORMAT!r})")
    return state


def search(generator: nn.Module, scorer: Scorer, optimizer: Optimizer, generations: int,
           out: str | Path | None = None, progress: bool = True, settings: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """Run (or continue) `generations` generations of ask → generate → score → tell.

    generator: codes (P, *in_shape) → images (P, 3, R, R), clamped to [0, 1] before scoring (what a file scorer
    would see); scorer: images → (P,) scores (`repro.scorers`); out: a run folder (module docstring) or None
    (nothing written, as the comparison does); a folder with a state.pt continues from it, provided `settings`
    (any plain dict describing the run) equals the one saved there.
    A `ScorerError` (or any error) in a generation propagates after the state of the last complete generation
    has been written: nothing of a run is lost.

    Returns {"rows": one stats row per generation, "best_codes": (G, *in_shape) the best code of each generation,
    "best_scores": (G,), "best_code", "best_score"}.
    """
    device = next(generator.parameters()).device
    settings = dict(settings or {})
    rows: list[dict[str, Any]] = []
    best_codes: list[torch.Tensor] = []
    best_scores: list[float] = []
    out = Path(out) if out is not None else None
    state = load_state(out) if out is not None else None
    if state is not None:
        if state["settings"] != settings:
            raise ValueError(f"{out / 'state.pt'} was saved by a run with other settings; resume it with its own "
                             f"(saved: {state['settings']}, given: {settings})")
        optimizer.load_state_dict(state["optimizer"])
        rows, best_scores = list(state["rows"]), state["best_scores"].tolist()
        best_codes = list(state["best_codes"])
    start = len(rows)
    folder = RunFolder(out, generator, generations, start, rows) if out is not None else None
    if folder is not None and best_codes:
        folder.restore_grid(torch.stack(best_codes))
    elapsed = rows[-1]["wall_s"] if rows else 0.0
    t0 = time.time() - elapsed
    generator.eval()
    bar = tqdm(range(start, generations), desc=f"{optimizer.name} search", unit="gen", initial=start,
               total=generations, disable=not progress)
    try:
        for g in bar:
            codes = optimizer.ask()
            population = len(codes)
            with torch.set_grad_enabled(optimizer.needs_gradient):
                images = generator(codes.to(device)).clamp(0, 1)
                ids = [f"gen{g:04d}_{g * population + i:06d}" for i in range(population)]
                scores = scorer(images, ids, batch=f"gen{g:04d}")
            optimizer.tell(scores)
            scores = scores.detach().double().cpu()
            top = int(torch.argmax(scores))
            best_codes.append(codes[top].detach().float().cpu().clone())
            best_scores.append(scores[top].item())
            row = summary_row(g, population, scores, max(best_scores), time.time() - t0)
            rows.append(row)
            bar.set_postfix(best=f"{row['best_so_far']:.4g}")
            if folder is not None:
                state = {"format": STATE_FORMAT, "settings": settings, "optimizer": optimizer.state_dict(),
                         "rows": rows, "best_codes": torch.stack(best_codes),
                         "best_scores": torch.tensor(best_scores, dtype=torch.float64)}
                folder.write(state, row, images[top].detach().float().cpu())
    finally:
        bar.close()
        if folder is not None:
            folder.close()
    best = int(np.argmax(best_scores)) if best_scores else 0
    return {"rows": rows, "best_codes": torch.stack(best_codes) if best_codes else torch.empty(0),
            "best_scores": torch.tensor(best_scores, dtype=torch.float64),
            "best_code": best_codes[best] if best_codes else None,
            "best_score": best_scores[best] if best_scores else None}


def settings_record(optimizer: Optimizer) -> dict[str, Any]:
    """What identifies an optimiser's run: its name, settings and population (for `search(settings=…)`)."""
    return {"optimizer": optimizer.name, **asdict(optimizer.settings), "population": optimizer.population}
