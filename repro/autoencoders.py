"""The DeePSiM VAE (paper §4.2) and the deterministic autoencoders of the loss comparison.

Both map pipeline images (B, 3, R, R) RGB [0, 1] to `(reconstruction, aux)` like every model of the
loop: `aux["code"]` is what the decoder saw; the VAE adds `mu` and `logvar` (log σ²) for the KL term
of Eq. 8 (`repro.losses.kl_loss`). Every parameter is trainable: the paper "allow[s] the encoder weights
to be adjusted", and the loop optimises all parameters that require grad.

What the paper states (§4.2) and what we had to choose (the supplement with the exact VAE and
autoencoder architectures could not be read; see ../shared/notes/deepsim-facts.md):

| part | paper | here |
|---|---|---|
| VAE encoder | "same as AlexNet up to layer FC6", predicting μ and σ | AlexNet conv1…pool5 (the stages of `config.encoder`'s architecture), then fc6 doubled: two Linear heads pool5 → `latent_dim` for μ and log σ² (no ReLU: μ must be signed). Predicting log σ² rather than σ keeps σ positive without a constraint (our choice). |
| code size | fc6-sized (4096) | `config.latent_dim` (4096 reproduces the paper) |
| encoder init | AlexNet weights when the comparator is AlexNet, random with VideoNet | conv1–5 copied from the comparator when it is pretrained and of the encoder's architecture (`alexnet` → `AlexNetTV.pretrained`, `caffenet` → the user's CaffeNet file), otherwise random from a seed of its own. The heads are always new: pretrained fc6 is not available, and fc6 → μ/σ is not fc6. The log σ² head starts at zero (σ = 1, the prior) for a stable start (our choice). `fine_tune_trunk=False` holds conv1–5 and trains the heads and decoder: fine-tuned with Adam under any λ_KL > 0 the trunk's pool5 ReLUs die within ~20 iterations (`python -m repro.vae_probe`), which collapses the posterior for good. `freeze_encoder_steps=N` holds the whole encoder for the first N iterations, so that the decoder first learns to invert its code (§4.2: "little difference from training an inversion network"). Both are our options; the paper states neither. |
| sampling in training | z = μ + σ ⊙ ε, ε ~ N(0, I) | ε from torch's global RNG, whose state every checkpoint saves, so a resumed run draws the same ε. In eval mode z = μ (deterministic reconstructions for grids and metrics). |
| decoder | Table 1 (the fc6 generator) | `Generator((latent_dim,), resolution, generator_width)` |
| sampling a model | z = ε, decode | `VAE.sample(n, generator)` / `python -m repro.sample` |
| autoencoder | not in the NIPS paper (arXiv v1 §autoencoders, architecture unknown) | a conv encoder mirroring the generator's up-convolutions (5 × conv k4 s2 p1, 32/64/128/256/256 channels × width, LeakyReLU 0.3) → Linear to `latent_dim` (linear code) → the same fc6-style generator. Random init (MSRA for LeakyReLU 0.3). |
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from repro.comparators import build_net
from repro.config import Config
from repro.needs import trunk_from_comparator
from repro.nets.caffenet import AlexNetTV, CaffeNet, TappedNet, TorchvisionInput
from repro.nets.generator import Generator, scaled

TRUNK_END = "pool5"  # the encoder keeps the comparator-architecture stages up to and including pool5
# A random encoder is drawn from its own seed (config.seed + this offset), not the global stream: the
# loop seeds the global RNG once, and a seeded-random comparator (alexnet-random) built from the same
# seed would otherwise get exactly the encoder's initial weights.
ENCODER_SEED_OFFSET = 7919
AE_CHANNELS = (32, 64, 128, 256, 256)  # mirror of the generator's deconv1…deconv5 (at width 1)
LEAKY_SLOPE = 0.3


class GaussianEncoder(nn.Module):
    """AlexNet up to fc6, with fc6 doubled into μ and log σ² heads (paper §4.2).

    `moments(images)` → (μ, log σ²), each (B, latent_dim). `forward(images)` → μ: the deterministic code,
    which is also what the loop probes for the code shape when D is conditioned on it.
    Images are pipeline images (B, 3, R, R) RGB [0, 1]; the trunk's own input transform is applied here.
    """

    def __init__(self, net: TappedNet, latent_dim: int, resolution: int, init_origin: str = ""):
        super().__init__()
        self.init_origin = init_origin  # where the trunk's weights came from (logs, tests); not in the state dict
        if TRUNK_END not in net.taps:
            raise ValueError(f"encoder network has no {TRUNK_END} stage (taps: {', '.join(net.taps)})")
        names = net.taps[: net.taps.index(TRUNK_END) + 1]
        self.transform = net.transform
        self.trunk = nn.Sequential(OrderedDict((name, net.stages[name]) for name in names))
        with torch.no_grad():
            pool5 = self.trunk(self.transform(torch.zeros(1, 3, resolution, resolution)))
        if pool5.numel() == 0:
            raise ValueError(f"resolution {resolution} is too small for the AlexNet encoder: pool5 is "
                             f"{tuple(pool5.shape[1:])}; use resolution ≥ 64")
        self.pool5_shape = tuple(pool5.shape[1:])
        in_dim = math.prod(self.pool5_shape)
        self.fc6_mu = nn.Linear(in_dim, latent_dim)
        self.fc6_logvar = nn.Linear(in_dim, latent_dim)
        nn.init.zeros_(self.fc6_logvar.weight)  # σ = 1 at the start, as the prior
        nn.init.zeros_(self.fc6_logvar.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's pool5, flattened (B, C·H·W): what both heads read."""
        return self.trunk(self.transform(images)).flatten(1)

    def heads(self, pool5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc6_mu(pool5), self.fc6_logvar(pool5)

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.moments(images)[0]


class VAE(nn.Module):
    """DeePSiM VAE: x → (μ, log σ²) → z = μ + σ ⊙ ε → x̂ = Dec(z) (paper §4.2, Eq. 7–8).

    forward(images (B, 3, R, R) RGB [0, 1]) → (x̂ (B, 3, R, R), {"code": z, "mu": μ, "logvar": log σ²}).
    Training mode samples ε from torch's global RNG; eval mode uses z = μ. `code` is detached: the loop
    feeds it to D as a given condition (as the inverted features are), so the encoder learns from the
    reconstruction and KL terms only, never by moving codes to fool D.
    """

    def __init__(self, encoder: GaussianEncoder, decoder: Generator):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = decoder.in_shape[0]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mu, logvar = self.encoder.moments(images)
        z = reparameterise(mu, logvar) if self.training else mu
        return self.decoder(z), {"code": z.detach(), "mu": mu, "logvar": logvar}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pipeline images → μ (B, latent_dim): the code an evaluation decodes (no sampling)."""
        return self.encoder(images)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) → pipeline images (B, 3, R, R), linear (not clamped)."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, I) (the paper's z = ε); `generator` makes them reproducible."""
        device = next(self.decoder.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ⊙ ε with σ = exp(½ log σ²), ε ~ N(0, I) from the global RNG (saved in checkpoints)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class ConvEncoder(nn.Module):
    """Deterministic conv encoder, the generator's up-convolutions mirrored: pipeline images (B, 3, R, R)
    → 5 × (conv k4 s2 p1, LeakyReLU 0.3) → flatten → Linear → code (B, latent_dim), linear."""

    def __init__(self, latent_dim: int, resolution: int, width: float = 1.0, leaky_slope: float = LEAKY_SLOPE):
        super().__init__()
        self.transform = TorchvisionInput()  # same normalisation as the AlexNet encoder's input
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin, side = 3, resolution
        for i, channels in enumerate(AE_CHANNELS, start=1):
            cout = scaled(channels, width)
            conv = nn.Conv2d(cin, cout, 4, 2, 1)
            nn.init.kaiming_normal_(conv.weight, a=leaky_slope, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
            layers[f"conv{i}"] = conv
            layers[f"relu{i}"] = nn.LeakyReLU(leaky_slope, inplace=True)
            cin, side = cout, side // 2
        if side < 1:
            raise ValueError(f"resolution {resolution} is too small for the conv encoder (5 halvings); use ≥ 32")
        layers["flatten"] = nn.Flatten()
        self.convs = nn.Sequential(layers)
        self.code = nn.Linear(cin * side * side, latent_dim)
        nn.init.kaiming_normal_(self.code.weight, nonlinearity="linear")
        nn.init.zeros_(self.code.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(self.convs(self.transform(images)))


class Autoencoder(nn.Module):
    """x → code = Enc(x) (B, latent_dim) → x̂ = Dec(code); forward → (x̂, {"code": code}), the code detached
    as in `VAE` (a condition for D, not a path for D's gradient into the encoder)."""

    def __init__(self, encoder: ConvEncoder, decoder: Generator):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        code = self.encoder(images)
        return self.decoder(code), {"code": code.detach()}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pipeline images → code (B, latent_dim)."""
        return self.encoder(images)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)


def encoder_architecture(name: str) -> str:
    """`config.encoder` names the VAE trunk's architecture: alexnet* → torchvision AlexNet, caffenet* → CaffeNet."""
    for arch in ("alexnet", "caffenet"):
        if name == arch or name == f"{arch}-random":
            return arch
    raise ValueError(f"the VAE encoder is AlexNet up to fc6: encoder={name!r} is not supported; "
                     "use encoder=alexnet (torchvision layout) or encoder=caffenet")


def vae_trunk(config: Config) -> tuple[TappedNet, str]:
    """The encoder's AlexNet and where its conv weights came from ("pretrained …" or "random …").

    Pretrained exactly when the comparator is a pretrained net of the same architecture (paper: "We
    initialized the encoder with AlexNet weights when using AlexNet as comparator, and at random when
    using VideoNet as comparator").
    """
    arch, resolution = encoder_architecture(config.encoder), config.resolution
    if trunk_from_comparator(config):
        if arch == "alexnet":
            return AlexNetTV.pretrained(resolution), "pretrained alexnet (the comparator's weights)"
        return (build_net("caffenet", resolution, config.comparator_weights or None),
                f"pretrained caffenet ({config.comparator_weights})")
    seed = config.seed + ENCODER_SEED_OFFSET
    with torch.random.fork_rng(devices=[]):  # leave the global stream as the loop seeded it
        torch.manual_seed(seed)
        net = AlexNetTV(resolution) if arch == "alexnet" else CaffeNet.random(seed=seed, resolution=resolution)
    return net, f"random {arch} (seed {seed})"


def build_model(config: Config) -> tuple[nn.Module, nn.Module]:
    """(model, encoder) for `config.model` ∈ {vae, autoencoder}; the loop trains every parameter of model.

    `encoder` is the trainable encoder inside `model`; its forward gives the (deterministic) code, whose
    shape the loop reads when D is conditioned on features.
    """
    if config.latent_dim < 1:
        raise ValueError(f"latent_dim must be ≥ 1, got {config.latent_dim}")
    if config.model == "vae":
        net, origin = vae_trunk(config)
        encoder = GaussianEncoder(net, config.latent_dim, config.resolution, init_origin=origin)
        decoder = Generator((config.latent_dim,), resolution=config.resolution, width=config.generator_width)
        model: nn.Module = VAE(encoder, decoder)
    elif config.model == "autoencoder":
        encoder = ConvEncoder(config.latent_dim, config.resolution, config.generator_width)
        decoder = Generator((config.latent_dim,), resolution=config.resolution, width=config.generator_width)
        model = Autoencoder(encoder, decoder)
    else:
        raise ValueError(f"build_model builds model=vae or model=autoencoder, not {config.model!r} "
                         "(inversion models are built by repro.loop)")
    for p in model.parameters():
        p.requires_grad_(True)  # a pretrained trunk is fine-tuned, not frozen ...
    if config.model == "vae" and not config.fine_tune_trunk:
        model.encoder.trunk.requires_grad_(False)  # ... unless the config holds it (see the table above)
    return model, encoder
