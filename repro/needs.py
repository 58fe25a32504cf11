"""What a config needs: the networks it builds, the weights files they read, and what of them only the user can
give. One rule (`nets_used`, `uses_comparator`, `uses_discriminator`) that everything asking the question goes
through: the config's validation (`missing_inputs`), train's checks before a run folder exists, the models
that are built, the weights shipped to a cluster's nodes and the sha256s recorded in provenance and checkpoints.
Torch-free, so that config validation stays light.
"""
from __future__ import annotations

from dataclasses import dataclass

# Every function takes a `repro.config.Config`; it is not imported here, since config validates through this module.

# Networks whose weights only the user can give (the original CaffeNet/VideoNet, any ONNX file): file hint.
USER_WEIGHTS = {"caffenet": "bvlc_reference_caffenet.caffemodel or the model zoo's caffenet ONNX file",
                "videonet": "color_model.caffemodel of Wang & Gupta", "onnx": "ONNX model file"}
# The shipped pretrained AlexNet (repro.weights) has conv1–conv5 only; its fc6–fc8 would be torch's random init.
ALEXNET_UNSHIPPED_TAPS = ("fc6", "fc7", "fc8")
PRETRAINED_CACHE = ("alexnet", "alexnet-tv")  # registry names whose weights come from the pretrained cache


@dataclass(frozen=True)
class NetUse:
    """One network a run builds from the registry: its role, registry name, the user's weights file ("" for the
    registry's own: the pretrained cache, the shared assets, or a seeded random init) and the tap it is read at
    ("" for a VAE/autoencoder trunk, which is trained past its conv layers), and the config field that names
    that file (a trunk's is the comparator's: it starts from the comparator's weights)."""
    role: str  # "encoder" | "comparator"
    name: str
    weights: str
    tap: str
    field: str  # "encoder_weights" | "comparator_weights"

    @property
    def cached(self) -> bool:
        """Its weights are the pretrained cache's (`repro.weights`), not the user's."""
        return not self.weights and self.name in PRETRAINED_CACHE


def uses_comparator(config: Config) -> bool:
    """The DeePSiM feature term is on: a comparator C is built (λ_feat > 0 of the deepsim loss)."""
    return config.recon_loss == "deepsim" and config.lambda_feat > 0


def uses_discriminator(config: Config) -> bool:
    """The adversarial term is on: a discriminator D is built and trained (λ_adv > 0 of the deepsim loss)."""
    return config.recon_loss == "deepsim" and config.lambda_adv > 0


def trunk_from_comparator(config: Config) -> bool:
    """A VAE's or autoencoder's AlexNet trunk starts from the comparator's weights: the trunk's architecture
    (`encoder`: alexnet or caffenet, with or without "-random") is the comparator's."""
    return (config.model != "inversion" and config.comparator in ("alexnet", "caffenet")
            and config.encoder.removesuffix("-random") == config.comparator)


def nets_used(config: Config) -> list[NetUse]:
    """Every registry network the run builds, in the order they are built: an inversion's frozen encoder (at
    `layer`); a VAE's or autoencoder's trunk when it starts from the comparator's weights (`encoder=alexnet` with
    `comparator=alexnet`, or caffenet with caffenet: the paper's "initialized with AlexNet weights when using
    AlexNet as comparator"), else its trunk is a seeded random init and reads no file; and the comparator when
    the feature term is on."""
    uses = []
    if config.model == "inversion":
        uses.append(NetUse("encoder", config.encoder, config.encoder_weights, config.layer, "encoder_weights"))
    elif trunk_from_comparator(config):
        uses.append(NetUse("encoder", config.comparator, config.comparator_weights, "", "comparator_weights"))
    if uses_comparator(config):
        uses.append(NetUse("comparator", config.comparator, config.comparator_weights, config.comparator_tap,
                           "comparator_weights"))
    return uses


def missing_inputs(config: Config) -> list[str]:
    """What the config needs from the user and does not have, as `--set key=…` hints (empty when complete).

    Refused rather than silently run: a caffenet/videonet/onnx network without its file, taps past pool5
    of the pretrained AlexNet without a full torchvision AlexNet state dict (only conv1–5 ship here), and
    an empty `train_data` (the paper presets name no default: ILSVRC-2012 is the user's)."""
    missing = []
    if not config.train_data:
        missing.append("--set train_data=DIR_OR_TRAIN_TXT (your ILSVRC-2012 training images)")
    for use in nets_used(config):
        if use.weights:
            continue
        if use.name in USER_WEIGHTS:
            missing.append(f"--set {use.field}=FILE ({use.role}={use.name} needs your {USER_WEIGHTS[use.name]})")
        elif use.name in PRETRAINED_CACHE and use.tap in ALEXNET_UNSHIPPED_TAPS:
            missing.append(f"--set {use.field}=FILE ({use.role} tap {use.tap} of the pretrained alexnet: only "
                           "conv1–5 ship here, so give a full torchvision AlexNet state dict, or use caffenet with "
                           "your weights)")
    return missing
