"""Scoring a trial's model in memory at each checkpoint: the paper's normalised errors and image metrics."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from repro.evaluation import scores
from repro.comparators import build_comparator
from repro.config import Config
from repro.devices import pick_device


class CheckpointScorer:
    """The paper's normalised errors (and image metrics) of the training model on n evaluation images.

    Built once per trial, before training: the evaluation images, the comparator of a vae/autoencoder and the
    image metrics. Called by the loop's checkpoint hook with the model it trains (no rebuilt copy, no state.pt
    read back); the feature space of an inversion is that model's own frozen encoder, so the reference
    features are computed at the first call. Measures with `repro.evaluation.scores`, as repro.evaluate does, so a
    trial's numbers are those `python -m repro.evaluate RUN_DIR --n n` gives for the same checkpoint.
    """

    def __init__(self, config: Config, n: int, image_metrics: bool, batch_size: int = 16):
        self.device = pick_device(config)
        self.batch_size = batch_size
        self.images, _, self.data = scores.load_eval_images(config, n)
        self.comparator = None
        if config.model != "inversion":  # vae / autoencoder: feature space = the comparator at its tap
            self.comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                               config.comparator_weights or None, seed=config.seed
                                               ).to(self.device).eval()
        self.reference = None
        self.image_metrics: Callable[[Any, Any], dict[str, float]] = (
            scores.image_metric_fn(self.device, batch_size, False) if image_metrics else (lambda a, b: {}))

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Scores of `model` by the one measurement (`repro.evaluation.scores.measure`; left in the mode it came in)."""
        encode = self.comparator if self.comparator is not None else model.encode
        if self.reference is None:
            self.reference = scores.reference_of(model, self.images, self.batch_size, encode=encode)
        return scores.measure(model, self.reference, self.image_metrics, self.batch_size, encode=encode)[0]
