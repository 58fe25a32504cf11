"""What produces the reconstruction: a frozen encoder's features → generator (inversion).

Each model maps real images to `(reconstruction, aux)`: `aux["code"]` is what the generator saw (fed to
D when it is conditioned on features), and the VAE adds `mu`/`logvar`. The loop optimises exactly the
parameters that require grad, so a frozen encoder can never be updated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from repro.autoencoders import build_model
from repro.comparators import Comparator, build_comparator
from repro.config import Config
from repro.needs import uses_comparator, uses_discriminator
from repro.errors import UsageError
from repro.generator_file import GeneratorFile, init_generator_path, load_generator, warm_start
from repro.nets.discriminator import Discriminator
from repro.nets.generator import Generator


class Inverter(nn.Module):
    """Invert a frozen network's tap: y = E(x) at `layer`, x̂ = G(y) (paper §4.1)."""

    def __init__(self, encoder: Comparator, generator: Generator):
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """y = E(x), shaped as the generator takes it ((B, C) for a global-pooling tap, see feature_shape)."""
        side = getattr(self.generator, "resolution", None)
        if side is not None and tuple(images.shape[-2:]) != (side, side):  # codes of another side mean nothing to G
            raise UsageError(f"this Inverter inverts {side}×{side} images, got shape {tuple(images.shape)}: load them "
                             f"at its side (repro.data.load_images(paths, {side}) warps and crops as in training)")
        with torch.no_grad():
            code = self.encoder(images)
        return code.reshape(code.shape[0], *self.generator.in_shape)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        code = self.encode(images)
        return self.generator(code), {"code": code}

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.generator(code)

    @classmethod
    def from_file(cls, source: str | Path | GeneratorFile, encoder_weights: str | None = None,
                  device: str | torch.device = "cpu") -> "Inverter":
        """A generator file (`repro.generator_file`: a path, or one already loaded) with the encoder it names,
        built from the registry; builds no D or comparator and leaves the global RNG alone (eval mode).
        `encoder_weights`: the user's file for encoders that need one (caffenet); default: the file's config's."""
        loaded = source if isinstance(source, GeneratorFile) else load_generator(source)
        weights = encoder_weights or (loaded.config.get("encoder_weights") or None)
        encoder = build_comparator(loaded.encoder, loaded.tap, loaded.resolution, weights,
                                   seed=int(loaded.config.get("seed", 0)), input_size=loaded.encoder_input_size)
        return cls(encoder, loaded.generator).to(device).eval()


def feature_shape(net: nn.Module, resolution: int) -> tuple[int, ...]:
    """Shape (without batch) of a comparator/encoder's output at this resolution, as the generator takes it:
    a tap that stays 1×1 at twice the resolution is a global pooling (SqueezeNet's class scores), i.e. a
    vector (C,), inverted by the vector generator as fc8 is; any other map keeps its (C, H, W)."""
    with torch.no_grad():
        shape = tuple(net(torch.zeros(1, 3, resolution, resolution)).shape[1:])
        if len(shape) == 3 and shape[1:] == (1, 1):
            if tuple(net(torch.zeros(1, 3, 2 * resolution, 2 * resolution)).shape[1:]) == shape:
                return shape[:1]
        return shape


def input_size(side: int, config: Config) -> int | None:
    """The side a frozen network is to see when it differs from the images' (`Comparator.input_size`)."""
    return side if side and side != config.resolution else None


def lambdas_of(config: Config) -> dict[str, float]:
    return {"feat": config.lambda_feat, "adv": config.lambda_adv, "img": config.lambda_img,
            "kl": config.lambda_kl if config.model == "vae" else 0.0}


@dataclass
class Parts:
    """Everything the loop trains or consults, built from a Config."""

    model: nn.Module
    comparator: Comparator | None
    discriminator: Discriminator | None
    shares_features: bool  # comparator == encoder at the same tap: reuse C(x) = y


def build_parts(config: Config, device: torch.device) -> Parts:
    """The networks of `config`, initialised from `config.seed` (identical initial weights on every worker)
    under `fork_rng`, so building one (to evaluate it, to score a Tune trial) leaves the caller's RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _build_parts(config, device)


def _build_parts(config: Config, device: torch.device) -> Parts:
    if config.model != "inversion":
        model, encoder = build_model(config)
    else:
        encoder = build_comparator(config.encoder, config.layer, config.resolution, config.encoder_weights or None,
                                   seed=config.seed, input_size=input_size(config.encoder_resolution, config))
        generator = Generator(feature_shape(encoder, config.resolution), resolution=config.resolution,
                              width=config.generator_width)
        if config.init_generator:  # a resumed run's checkpoint overwrites this afterwards
            warm_start(generator, init_generator_path(config.init_generator), encoder=config.encoder,
                       tap=config.layer, encoder_input_size=input_size(config.encoder_resolution, config))
        model = Inverter(encoder, generator)
    comparator_size = input_size(config.comparator_resolution, config)
    same = (config.model == "inversion" and config.comparator == config.encoder
            and config.comparator_weights == config.encoder_weights)
    comparator = None
    if uses_comparator(config):
        if same and config.comparator_tap == config.layer and comparator_size == encoder.input_size:
            comparator = encoder
        elif same:
            comparator = Comparator(encoder.net, config.comparator_tap, config.comparator, input_size=comparator_size)
        else:
            comparator = build_comparator(config.comparator, config.comparator_tap, config.resolution,
                                          config.comparator_weights or None, seed=config.seed,
                                          input_size=comparator_size)
    discriminator = None
    if uses_discriminator(config):
        feature_dim = None
        if config.discriminator_features:
            code_shape = feature_shape(encoder, config.resolution)
            feature_dim = math.prod(code_shape)
        discriminator = Discriminator(resolution=config.resolution, width=config.discriminator_width,
                                      feature_dim=feature_dim)
    parts = Parts(model, comparator, discriminator,
                  shares_features=comparator is encoder and config.model == "inversion")
    for module in (parts.model, parts.comparator, parts.discriminator):
        if module is not None:
            module.to(device)
            if config.channels_last:
                module.to(memory_format=torch.channels_last)
    if config.compile:
        compile_parts(parts)
    return parts


def compile_parts(parts: Parts) -> None:
    """torch.compile the encoder, generator, comparator and D in place (`Module.compile`: state_dict keys and
    checkpoints stay those of the eager modules). Encoder and generator are compiled separately (the encoder
    runs without grad, the generator with), and a comparator that is the encoder is compiled once."""
    model = parts.model
    units = [model.encoder, model.generator] if isinstance(model, Inverter) else [model]
    seen: set[int] = set()
    for module in (*units, parts.comparator, parts.discriminator):
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            module.compile()
