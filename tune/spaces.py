"""λ search spaces, one per preset family, as data.

The paper's weights (§3.2 and §4.2): λ_feat = 0.01 for the AlexNet CONV5 comparator, λ_adv = 100,
λ_img = 2·10⁻⁶ and, for the VAE, λ_KL = 20. They span eight orders of magnitude because each term sums
over a different number of values, so each space is log-uniform, one decade on either side of the paper's
value by default (×0.1 … ×10). A preset that switches a term off (the ablations) keeps it off: only the
weights the preset uses are searched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.config import Config
from repro.errors import DeepsimError

PAPER_LAMBDAS: dict[str, float] = {"lambda_feat": 0.01, "lambda_adv": 100.0, "lambda_img": 2e-6, "lambda_kl": 20.0}


@dataclass(frozen=True)
class LogRange:
    """A log-uniform range [low, high] of one loss weight."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise SpaceError(f"a log range needs 0 < low < high, got [{self.low:g}, {self.high:g}]")

    @classmethod
    def around(cls, centre: float, decades: float) -> "LogRange":
        return cls(centre / 10**decades, centre * 10**decades)

    @property
    def centre(self) -> float:
        return math.sqrt(self.low * self.high)

    def domain(self):
        """The Ray Tune sampler for this range."""
        from ray import tune

        return tune.loguniform(self.low, self.high)


# One space per preset family: which weights it searches and over which ranges.
SPACES: dict[str, dict[str, LogRange]] = {
    # Inversion presets (smoke, small-*, cpu-*, paper-*, ablations): the three terms of Eq. 1.
    "deepsim": {
        "lambda_feat": LogRange(1e-3, 1e-1),
        "lambda_adv": LogRange(10.0, 1000.0),
        "lambda_img": LogRange(2e-7, 2e-5),
    },
    # model=vae (§4.2): the same three terms plus the KL term.
    "vae": {
        "lambda_feat": LogRange(1e-3, 1e-1),
        "lambda_adv": LogRange(10.0, 1000.0),
        "lambda_img": LogRange(2e-7, 2e-5),
        "lambda_kl": LogRange(2.0, 200.0),
    },
    # model=autoencoder trained with the DeePSiM loss.
    "autoencoder": {
        "lambda_feat": LogRange(1e-3, 1e-1),
        "lambda_adv": LogRange(10.0, 1000.0),
        "lambda_img": LogRange(2e-7, 2e-5),
    },
}
FAMILY_OF_MODEL = {"inversion": "deepsim", "vae": "vae", "autoencoder": "autoencoder"}


class SpaceError(DeepsimError, ValueError):
    """A preset whose λ cannot be searched; the message says why."""


def family_of(config: Config) -> str:
    return FAMILY_OF_MODEL[config.model]


def space_for(config: Config, decades: float | None = None) -> dict[str, LogRange]:
    """The λ ranges to search for `config`: its family's space, limited to the terms the preset uses.

    Args:
        config: the resolved preset (+ overrides) every trial starts from.
        decades: if given, each range is instead `decades` on either side of the config's own value
            (to refine around a tuned preset); None = the family's ranges above.
    Returns:
        {config field name: LogRange}, in the order of the family's space.
    """
    if config.recon_loss != "deepsim":
        raise SpaceError(f"preset {config.preset!r} trains with recon_loss={config.recon_loss!r}, which has no λ "
                         "weights; searches are for the DeePSiM loss (recon_loss=deepsim)")
    if decades is not None and decades <= 0:
        raise SpaceError(f"decades must be > 0, got {decades}")
    family = SPACES[family_of(config)]
    space = {}
    for name, default in family.items():
        value = getattr(config, name)
        if value <= 0:  # an ablation: the term stays switched off
            continue
        space[name] = default if decades is None else LogRange.around(value, decades)
    if len(space) < 2:
        raise SpaceError(
            f"preset {config.preset!r} uses only {', '.join(space) or 'no weighted term'}: with a single loss term "
            "its weight only rescales the loss, which Adam is (up to eps) invariant to, so there is nothing to "
            "search; pick a preset with at least two terms (e.g. smoke, small-pool5, paper-fc6)")
    return space


def param_space(space: dict[str, LogRange]) -> dict[str, object]:
    """{name: tune.loguniform(low, high)} for a Tuner's param_space or PBT's hyperparam_mutations."""
    return {name: r.domain() for name, r in space.items()}
