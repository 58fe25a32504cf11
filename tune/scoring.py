"""Scoring a trial's model in memory at each checkpoint: the paper's normalised errors and image metrics."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from repro.config import Config


class CheckpointScorer:
    """The paper's normalised errors (and image metrics) of the training model on n evaluation images.

    Built once per trial, before training: the evaluation images, the comparator of a vae/autoencoder and the
    image metrics. Called by the loop's checkpoint hook with the model it trains (no rebuilt copy, no state.pt
    read back); the feature space of an inversion is that model's own frozen encoder, so the reference
    features are computed at the first call. Uses `repro.evaluate`'s functions, so a trial's numbers are those
    `python -m repro.evaluate RUN_DIR --n n` gives for the same checkpoint.
    """

    def __init__(self, config: Config, n: int, image_metrics: bool, batch_size: int = 16):
        from repro import evaluate
        from repro.comparators import build_comparator
        from repro.devices import pick_device

        self.device = pick_device(config)
        self.batch_size = batch_size
        self.images, _, self.data = evaluate.load_eval_images(config, n)
        self.comparator = None
        if config.model != "inversion":  # vae / autoencoder: feature space = the comparator at its tap
            self.comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                               config.comparator_weights or None, seed=config.seed
                                               ).to(self.device).eval()
        self.reference = None
        self.image_metrics: Callable[[Any, Any], dict[str, float]] = (
            evaluate.image_metric_fn(self.device, batch_size, False) if image_metrics else (lambda a, b: {}))

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Scores of `model` (left in the train/eval mode it came in); the one call to switch to a shared
        `measure(model, images, reference)`."""
        from repro import evaluate

        encode = self.comparator if self.comparator is not None else model.encode
        was_training = model.training
        model.eval()
        try:
            if self.reference is None:
                features = evaluate.batched(encode, self.images, self.batch_size, self.device, "encode", False)
                self.reference = evaluate.make_reference(self.images, features)
            reconstructions = evaluate.batched(lambda x: model(x)[0].clamp(0, 1), self.reference.images,
                                               self.batch_size, self.device, "reconstruct", False)
            features = evaluate.batched(encode, reconstructions, self.batch_size, self.device, "re-encode", False)
            return evaluate.score(self.reference, reconstructions, features, self.image_metrics)
        finally:
            model.train(was_training)
