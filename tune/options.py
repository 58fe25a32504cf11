"""What a search is asked for (`SearchOptions`) and the base config every trial starts from."""
from __future__ import annotations

from dataclasses import dataclass

from repro.config import Config, make_config
from repro.errors import DeepsimError

SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHERS = ("random", "optuna")


class SearchError(DeepsimError, ValueError):
    """A search that cannot start or resume; the message says what to do."""


@dataclass(frozen=True)
class SearchOptions:
    preset: str
    overrides: dict[str, str]
    target: str                  # as given: paper | paper:LAYER | image=F,feature=F
    trials: int = 8              # Tune's num_samples
    scheduler: str = "asha"      # asha | pbt | fifo
    searcher: str = "random"     # random (BasicVariantGenerator) | optuna (if installed)
    decades: float | None = None  # None = the family's ranges; else ± decades around the preset's values
    eval_images: int = 16
    image_metrics: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrent: int | None = None  # max concurrent trials; None = what the resources allow
    seed: int = 0                # the searcher's and PBT's random seed


def build_config(options: SearchOptions) -> Config:
    """The base config every trial starts from: preset ← overrides, sized to one trial's resources."""
    overrides = dict(options.overrides)
    overrides.setdefault("threads", str(max(1, int(options.cpus_per_trial))))
    overrides.setdefault("data_cache_shared", "true")  # trials on a node share one copy of the warped images
    if options.gpus_per_trial > 0:  # else the preset's device (auto: a trial without GPUs sees none and uses CPU)
        overrides.setdefault("device", "cuda")
    return make_config(options.preset, overrides)


def reports_per_trial(config: Config) -> int:
    """How often the loop reports (at every checkpoint and at the last step)."""
    return config.steps // config.checkpoint_every + (1 if config.steps % config.checkpoint_every else 0)

