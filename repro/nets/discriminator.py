"""The DeePSiM discriminator, faithful to the training copy (kamitani/discriminator.prototxt, "v2").

    Dconv1 32 k7 s4 → Dconv2 64 k5 s1 → Dconv3 128 k3 s2 → Dconv4 256 k3 s1 → Dconv5 256 k3 s2
    (ReLU after each, no padding; maps 56/52/25/23/11 at 227) → global average pooling (Caffe: AVE pool
    kernel 11 stride 11, i.e. global at 227) → dropout 0.5 → Dfc6 FC 256 → ReLU → dropout 0.5 → Dfc7 FC 2.

The output is two logits; the loss applies softmax cross-entropy (Caffe SoftmaxWithLoss). Index 1 is
"real", index 0 "generated" (label 1 for data images in the training copy).

Input: pipeline images (B, 3, R, R) RGB [0, 1]. The network's own transform (`self.transform`) maps them
to what the original D saw: BGR, 0–255, minus the channel means — the training data layer subtracted
104/117/123; we use `ILSVRC_MEAN_BGR` (104.0/116.7/122.7), the constant of the CaffeNet transform and of
the generator's output conversion, so a generated image reaches D in exactly the units G produced. This
also keeps Dconv1's small MSRA coefficient (0.1, calibrated for 0–255 inputs) meaningful.

Reduced scale: `width` multiplies every hidden channel count and FC width (2 logits stay). At smaller
resolutions the unpadded convolutions shrink the map: 15/11/5/3/1 at 64, 23/19/9/7/3 at 96,
31/27/13/11/5 at 128. Below R = 63 Dconv5 would have nothing to convolve and the constructor raises.
Global average pooling (the paper's description) replaces the fixed 11×11 window at every resolution.

Initialisation (training copy): MSRA, std = coeff · sqrt(2 / fan_in) with coeff 0.1 for Dconv1, Dfc6 and
Dfc7 and 1 for Dconv2–5 (see `repro.nets.generator.msra_` for the reading of msra_coeff); biases 0. All
weights and biases have decay_mult 1: weight decay 4e-4 applies to every D parameter (set in the loop's
optimiser).

Optional conditioning on the code y (`feature_dim`): the paper says its inversion D may see the
feature vector; the training copy does not ("do not feed fmri to the discriminator"). The branch here,
Linear(feature_dim → 1024) → ReLU → Linear(1024 → 512) → ReLU, concatenated with the pooled image
features before the first dropout / Dfc6, is a guess taken from a third-party port, not from the
original. Its layers use MSRA coeff 1 (also a guess).

Parameter count at width 1: 1.08 M (image-only), + 4.85 M for a 4096-d feature branch.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from repro.nets.caffenet import ILSVRC_MEAN_BGR, CaffeInput
from repro.nets.generator import msra_, scaled

# (Caffe layer name, output channels at width 1, kernel, stride, msra_coeff) from the training copy.
CONV_LAYERS: tuple[tuple[str, int, int, int, float], ...] = (
    ("Dconv1", 32, 7, 4, 0.1),
    ("Dconv2", 64, 5, 1, 1.0),
    ("Dconv3", 128, 3, 2, 1.0),
    ("Dconv4", 256, 3, 1, 1.0),
    ("Dconv5", 256, 3, 2, 1.0),
)
FC_WIDTH = 256  # Dfc6
FC_COEFF = 0.1  # msra_coeff of Dfc6 and Dfc7
FEATURE_BRANCH = (1024, 512)  # guess from a third-party port
DROPOUT = 0.5


def conv_sides(resolution: int) -> list[int]:
    """Spatial side after each of Dconv1–5 (no padding, floor as Caffe convolutions do): 56/52/25/23/11 at 227."""
    sides, side = [], resolution
    for _, _, kernel, stride, _ in CONV_LAYERS:
        side = (side - kernel) // stride + 1
        sides.append(side)
    return sides


def min_resolution() -> int:
    """Smallest input side for which every Dconv keeps at least a 1×1 map (63)."""
    resolution = 1
    while min(conv_sides(resolution)) < 1:
        resolution += 1
    return resolution


class Discriminator(nn.Module):
    """Real-vs-generated classifier on local image statistics (paper §3.1, supplementary).

    Args:
        resolution: side R of the square input images; must be ≥ 63 so Dconv5 has a map to work on.
        width: multiplier on every hidden channel count and FC width (1.0 = the training copy).
        feature_dim: if given, D also sees the code y (flattened, this many numbers) through a
            1024 → 512 branch (a guess, see the module docstring).
        dropout: dropout probability after pooling and after Dfc6 (0.5 in the paper).

    forward(images (B, 3, R, R) pipeline RGB [0, 1], features (B, ...) or None) → logits (B, 2),
    index 1 = "real".
    """

    def __init__(self, resolution: int = 227, width: float = 1.0, feature_dim: int | None = None,
                 dropout: float = DROPOUT):
        super().__init__()
        sides = conv_sides(resolution)
        if min(sides) < 1:
            raise ValueError(f"Discriminator cannot run at resolution {resolution}: its unpadded convolutions "
                             f"shrink the map to {sides} (Dconv1–5); use a resolution of at least {min_resolution()}")
        if width <= 0:
            raise ValueError(f"Discriminator width must be > 0, got {width}")
        if feature_dim is not None and feature_dim < 1:
            raise ValueError(f"Discriminator feature_dim must be a positive size or None, got {feature_dim}")
        self.resolution, self.width, self.feature_dim = resolution, width, feature_dim
        self.sides = sides
        self.transform = CaffeInput(ILSVRC_MEAN_BGR)

        convs: OrderedDict[str, nn.Module] = OrderedDict()
        cin = 3
        for i, (name, cout, kernel, stride, coeff) in enumerate(CONV_LAYERS, start=1):
            cout = scaled(cout, width)
            conv = nn.Conv2d(cin, cout, kernel, stride)  # no padding, as in the prototxt
            msra_(conv.weight, coeff)
            nn.init.zeros_(conv.bias)
            convs[name] = conv
            convs[f"Drelu{i}"] = nn.ReLU(inplace=True)
            cin = cout
        self.convs = nn.Sequential(convs)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # global average pooling

        joint = cin
        self.feature_branch: nn.Sequential | None = None
        if feature_dim is not None:
            hidden, out = (scaled(c, width) for c in FEATURE_BRANCH)
            branch = OrderedDict(fc_feat1=nn.Linear(feature_dim, hidden), relu_feat1=nn.ReLU(inplace=True),
                                 fc_feat2=nn.Linear(hidden, out), relu_feat2=nn.ReLU(inplace=True))
            for layer in (branch["fc_feat1"], branch["fc_feat2"]):
                msra_(layer.weight, 1.0)
                nn.init.zeros_(layer.bias)
            self.feature_branch = nn.Sequential(branch)
            joint += out

        fc6, fc7 = nn.Linear(joint, scaled(FC_WIDTH, width)), nn.Linear(scaled(FC_WIDTH, width), 2)
        for fc in (fc6, fc7):
            msra_(fc.weight, FC_COEFF)
            nn.init.zeros_(fc.bias)
        self.classifier = nn.Sequential(OrderedDict(
            drop5=nn.Dropout(dropout), Dfc6=fc6, Drelu6=nn.ReLU(inplace=True), drop6=nn.Dropout(dropout), Dfc7=fc7))

    def forward(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 3, R, R) pipeline RGB [0, 1]; features (B, ...) with feature_dim numbers each, only
        when built with feature_dim → logits (B, 2), index 1 = real."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"Discriminator built for images (B, 3, {self.resolution}, {self.resolution}), "
                             f"got {tuple(images.shape)}")
        pooled = self.pool(self.convs(self.transform(images)))  # (B, 256·width)
        if self.feature_branch is None:
            if features is not None:
                raise ValueError("this Discriminator was built without feature_dim and cannot take features; "
                                 "build it with feature_dim=<size of the code> to condition on y")
            return self.classifier(pooled)
        if features is None:
            raise ValueError(f"this Discriminator is conditioned on the code (feature_dim={self.feature_dim}): "
                             "pass features=y")
        flat = features.flatten(1)
        if flat.shape != (images.shape[0], self.feature_dim):
            raise ValueError(f"Discriminator expected features with {self.feature_dim} numbers per image for a batch "
                             f"of {images.shape[0]}, got {tuple(features.shape)}")
        return self.classifier(torch.cat([pooled, self.feature_branch(flat)], dim=1))
