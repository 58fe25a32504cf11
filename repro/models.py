"""What produces the reconstruction: a frozen encoder's features → generator (inversion).

Each model maps real images to `(reconstruction, aux)`: `aux["code"]` is what the generator saw (fed to
D when it is conditioned on features), and the VAE adds `mu`/`logvar`. The loop optimises exactly the
parameters that require grad, so a frozen encoder can never be updated.
"""
from __future__ import annotations

import torch
from torch import nn

from repro.comparators import Comparator
from repro.nets.generator import Generator


class Inverter(nn.Module):
    """Invert a frozen network's tap: y = E(x) at `layer`, x̂ = G(y) (paper §4.1)."""

    def __init__(self, encoder: Comparator, generator: Generator):
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """y = E(x), shaped as the generator takes it ((B, C) for a global-pooling tap, see feature_shape)."""
        with torch.no_grad():
            code = self.encoder(images)
        return code.reshape(code.shape[0], *self.generator.in_shape)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        code = self.encode(images)
        return self.generator(code), {"code": code}

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.generator(code)

    @classmethod
    def from_file(cls, path: str, encoder_weights: str | None = None, device: str = "cpu") -> "Inverter":
        """A generator file (`repro.generator_file`) with the encoder it names; builds no D or comparator and
        leaves the global RNG alone. `encoder_weights`: the user's file for encoders that need one (caffenet)."""
        from repro.generator_file import load_generator

        return load_generator(path).inverter(encoder_weights, device)


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
