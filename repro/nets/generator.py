"""The up-convolutional generators of DeePSiM (paper Table 1), faithful to the released prototxts.

One class covers every input the paper inverts, and the decoders of the VAE / autoencoders:

    vector (D,)   e.g. fc6/fc7 (4096), fc8 (1000), a latent code:
        defc7 FC 4096 → defc6 FC 4096 → defc5 FC 4096 → reshape 256×4×4
    map (C, s, s) e.g. pool5 (256×6×6, what the paper calls CONV5):
        Rconv6 conv 512 k3 p1 → Rconv7 conv 512 k3 p1 → Rconv8 conv 512 k3 p0 (6 → 4)
    then the same up-convolution stack (every layer a Caffe "Deconvolution"):
        deconv5 256 k4 s2 p1 → conv5_1 512 k3 s1 p1 → deconv4 256 → conv4_1 256 → deconv3 128 →
        conv3_1 128 → deconv2 64 → deconv1 32 → deconv0 3            (up-convs k4 s2 p1, "convs" k3 s1 p1)
    LeakyReLU 0.3 after every layer but the last; linear output; 4×4 → 256×256, centre crop to 227.

Layer and module names are the Caffe layer names of `generator_{fc6,fc7,pool5}.prototxt`
(../shared/assets/reference-prototxt/synthesizing), so a test can hold the module against the prototxt and
Caffe weights could be loaded by name. The stride-1 "conv" layers are `nn.ConvTranspose2d` because the
prototxts make them Deconvolution layers: same function as a convolution, but the weight layout
(in, out, k, k) and the MSRA fan-in Caffe computes from it are the deconvolution's.

Reduced scale, same topology:
- `width` multiplies every hidden channel count and FC width (3 output channels and the input stay).
- `resolution` R: the stack starts at `start = ceil(R / 64)` (1 at 64, 2 at 96/128, 4 at 227/256), six ×2
  up-convolutions give `64·start`, and the result is centre-cropped to R (offset (64·start − R) // 2:
  14 at 227, as Caffe's CropSimple does in the training copy). For vectors the last FC layer has
  `256·width·start²` outputs so that it reshapes to (256·width, start, start) (4096 at R=227, width 1).
- Map inputs with side s: Rconv6/Rconv7 keep the size (pad 1). Rconv8 gets pad 0 when s − 2 = start
  (the faithful 6 → 4 at R=227), pad 1 when s = start (s = 1 at 64, 2 at 96). A code map larger than
  that (s > start, e.g. the 6×6 CONV5 code at R=96, `repro.config` protocol CONV5*) is never pooled: the
  stack starts from the code's own grid ("code" bridge, Rconv8 pad 1) and keeps only its last
  n = ceil(log2(R / s)) up-convolutions (with the stride-1 convs after them), s·2ⁿ cropped to R
  (6 → 96 at R=96: exactly 16 output pixels per code cell, as the code's cells tile the image). Only a map
  smaller than the start (s < start) is brought to start×start by adaptive average pooling. See `bridge`.

Output space. The original generator predicted Caffe units (BGR, 0–255, minus the ILSVRC mean) and all
its losses were computed in those units. By default (`output_space="caffe"`) the network still does, and
a fixed buffer transform maps its output to pipeline images (RGB [0, 1]): x = (flip_BGR(o) + mean) / 255.
Because `repro.losses` multiplies pipeline differences by 255, every loss and gradient is the original's,
and the MSRA initialisation (calibrated for 0–255 outputs) keeps its meaning; the initial output is
≈ the mean colour (0.48, 0.46, 0.41) since the output layer starts with zero bias. The mean is
`ILSVRC_MEAN_BGR`, the same constant the CaffeNet input transform subtracts, so a generated image reaches
a Caffe comparator in exactly the units the network produced. `output_space="pipeline"` (not faithful)
lets the network predict pipeline values directly, plus a fixed offset 0.45 (mean grey) held as a buffer.

Initialisation (training copy, kamitani/generator.prototxt): Caffe's MSRA filler with the training copy's
`msra_coeff`, read as std = coeff · sqrt(2 / fan_in) (the convention of Dosovitskiy's own code that uses
the same name; the Caffe fork's source was not available), where fan_in is Caffe's `count / shape[0]`
(for a Deconvolution blob (in, out, k, k) that is out·k·k). FC layers: coeff 1, biases 0 and learned.
Up-convolutions: coeff 1.8 (stride 2) and 0.9 (stride 1); biases constant 0 with lr_mult 0, so by default
they are buffers, not parameters: no optimiser and no `requires_grad_(True)` can move them
(`learn_upconv_bias=True` makes them parameters). Rconv6–8 (pool5 generator) have no training prototxt:
MSRA 0.9 as for the other stride-1 layers (a guess); their biases learn (lr_mult 1 in the released
prototxt). Weight decay (the loop's business): decay_mult 0 on every G layer of the training copy, but 1 on the
Rconv6–8 weights of generator_pool5.prototxt, so those get the solver's 4e-4 (`Config.generator_map_decay`).

Parameter counts at width 1, R=227: fc6/fc7 input 56.1 M (FC 50.3 M + up-convolutions 5.8 M); fc8 input
43.4 M; pool5 input 12.7 M (Rconv6–8 5.9 M + up-convolutions 6.8 M, deconv5 reading 512 channels).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

from repro.nets.caffenet import ILSVRC_MEAN_BGR

PIPELINE_GREY = 0.45  # initial output level for output_space="pipeline"

# (Caffe layer name, output channels at width 1, kernel, stride, pad) of the up-convolution stack,
# from generator_{fc6,fc7,pool5}.prototxt. Stride 2 = up-convolution ("uconv" in Table 1).
UPCONV_LAYERS: tuple[tuple[str, int, int, int, int], ...] = (
    ("deconv5", 256, 4, 2, 1),
    ("conv5_1", 512, 3, 1, 1),
    ("deconv4", 256, 4, 2, 1),
    ("conv4_1", 256, 3, 1, 1),
    ("deconv3", 128, 4, 2, 1),
    ("conv3_1", 128, 3, 1, 1),
    ("deconv2", 64, 4, 2, 1),
    ("deconv1", 32, 4, 2, 1),
    ("deconv0", 3, 4, 2, 1),
)
UPCONV_STRIDE2 = sum(1 for layer in UPCONV_LAYERS if layer[3] == 2)  # six ×2 up-convolutions


def upconv_layers(n_up: int) -> tuple[tuple[str, int, int, int, int], ...]:
    """The last `n_up` stride-2 layers of the released stack with the stride-1 convs that follow them
    (all of it for n_up = 6): a code grid that is already large needs fewer doublings to reach R."""
    if not 1 <= n_up <= UPCONV_STRIDE2:
        raise ValueError(f"the up-convolution stack has {UPCONV_STRIDE2} ×2 layers; {n_up} requested")
    firsts = [i for i, layer in enumerate(UPCONV_LAYERS) if layer[3] == 2]
    return UPCONV_LAYERS[firsts[-n_up]:]


FC_LAYERS = ("defc7", "defc6", "defc5")  # vector head, Caffe names (inverted order is Caffe's naming)
CONV_LAYERS = ("Rconv6", "Rconv7", "Rconv8")  # map head, Caffe names
FC_WIDTH = 4096
HEAD_CHANNELS = 512  # Rconv6–8
RESHAPE_CHANNELS = 256  # channels of the map the up-convolution stack starts from


def scaled(channels: int, width: float) -> int:
    """Hidden channel count at a width multiplier (at least 1)."""
    return max(1, round(channels * width))


def msra_(weight: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Caffe's MSRA filler with the training copy's msra_coeff: N(0, (coeff·sqrt(2/fan_in))²).

    fan_in is Caffe's `count / shape[0]`: in·k·k for a Convolution (out, in, k, k), out·k·k for a
    Deconvolution (in, out, k, k), in for an InnerProduct (out, in).
    """
    fan_in = weight.numel() // weight.shape[0]
    with torch.no_grad():
        return weight.normal_(0.0, coeff * math.sqrt(2.0 / fan_in))


class UpConv(nn.ConvTranspose2d):
    """A Caffe Deconvolution layer; its bias is a zero buffer unless `learn_bias` (lr_mult 0 in the original)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, pad: int, learn_bias: bool):
        super().__init__(cin, cout, kernel, stride, pad, bias=learn_bias)
        if not learn_bias:
            del self._parameters["bias"]
            self.register_buffer("bias", torch.zeros(cout))
        msra_(self.weight, 1.8 if stride == 2 else 0.9)
        if learn_bias:
            nn.init.zeros_(self.bias)


class FromCaffeUnits(nn.Module):
    """Caffe units (B, 3, H, W) BGR 0–255 minus the mean → pipeline images RGB [0, 1]."""

    def __init__(self, mean_bgr: tuple[float, float, float] = ILSVRC_MEAN_BGR):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + self.mean) / 255.0).flip(1)


class PipelineOffset(nn.Module):
    """Not faithful: the network predicts pipeline values around a fixed grey offset."""

    def __init__(self, offset: float = PIPELINE_GREY):
        super().__init__()
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


class Generator(nn.Module):
    """Up-convolutional generator: code y → image x̂ (paper Table 1, released prototxts).

    Args:
        in_shape: shape of one input code without the batch: (D,) for vectors (fc6/fc7 4096, fc8 1000, a
            latent code), (C, H, W) for maps (pool5 256×s×s).
        resolution: side R of the output images; the stack produces 64·ceil(R/64) and crops the centre.
        width: multiplier on every hidden channel count and FC width (1.0 = the released prototxts).
        leaky_slope: LeakyReLU negative slope (0.3 in the paper and prototxts).
        learn_upconv_bias: let the up-convolution biases learn (the original keeps them at 0, lr_mult 0).
        output_space: "caffe" (faithful: the net predicts BGR 0–255 mean-subtracted, converted to
            pipeline images by a fixed transform) or "pipeline" (net output + 0.45 is the image).

    forward(code (B, *in_shape)) → pipeline images (B, 3, R, R), RGB, ≈[0, 1], linear (not clamped).
    """

    def __init__(self, in_shape: tuple[int, ...], resolution: int = 227, width: float = 1.0,
                 leaky_slope: float = 0.3, learn_upconv_bias: bool = False,
                 output_space: Literal["caffe", "pipeline"] = "caffe"):
        super().__init__()
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) not in (1, 3) or min(in_shape) < 1:
            raise ValueError(f"Generator in_shape must be (D,) for a vector or (C, H, W) for a map, got {in_shape}")
        if resolution < 1 or width <= 0:
            raise ValueError(f"Generator needs resolution ≥ 1 and width > 0, "
                             f"got resolution={resolution}, width={width}")
        if output_space not in ("caffe", "pipeline"):
            raise ValueError(f"Generator output_space must be 'caffe' or 'pipeline', got {output_space!r}")
        self.in_shape, self.resolution, self.width = in_shape, resolution, width
        self.start = math.ceil(resolution / 64)  # side of the map the up-convolutions start from
        self.bridge = "reshape"
        if len(in_shape) == 3:
            self.bridge = self._bridge_rule(in_shape[1], in_shape[2], self.start)
            if self.bridge == "code":  # the stack starts from the code's own grid, no pooling
                self.start = in_shape[1]
        self.n_up = max(1, math.ceil(math.log2(resolution / self.start))) if self.bridge == "code" else UPCONV_STRIDE2
        self.full_side = self.start * 2**self.n_up  # 64·start with the full stack (six ×2 up-convolutions)
        self.crop_offset = (self.full_side - resolution) // 2  # 14 at 227 (256 → 227)
        self.output_space = output_space
        # Caffe's ReLU with negative_slope, in place as in the prototxts.
        lrelu = lambda: nn.LeakyReLU(leaky_slope, inplace=True)  # noqa: E731
        c0 = scaled(RESHAPE_CHANNELS, width)

        head: OrderedDict[str, nn.Module] = OrderedDict()
        if len(in_shape) == 1:
            # defc7 → defc6 → defc5 (names as in the prototxt), then Caffe's Reshape to 256×4×4.
            dims = [in_shape[0], scaled(FC_WIDTH, width), scaled(FC_WIDTH, width), c0 * self.start**2]
            for name, cin, cout in zip(FC_LAYERS, dims[:-1], dims[1:]):
                fc = nn.Linear(cin, cout)
                msra_(fc.weight, 1.0)
                nn.init.zeros_(fc.bias)
                head[name] = fc
                head[f"relu_{name}"] = lrelu()
            head["reshape"] = nn.Unflatten(1, (c0, self.start, self.start))
            cin = c0
        else:
            channels = in_shape[0]
            ch = scaled(HEAD_CHANNELS, width)
            for i, name in enumerate(CONV_LAYERS):
                pad = 0 if (i == 2 and self.bridge == "pad0") else 1
                conv = nn.Conv2d(channels if i == 0 else ch, ch, 3, 1, pad)
                msra_(conv.weight, 0.9)
                nn.init.zeros_(conv.bias)
                head[name] = conv
                head[f"Rrelu{6 + i}"] = lrelu()
            if self.bridge == "adaptive":
                head["pool_to_start"] = nn.AdaptiveAvgPool2d(self.start)
            cin = ch
        self.head = nn.Sequential(head)

        upconv: OrderedDict[str, nn.Module] = OrderedDict()
        for name, cout, kernel, stride, pad in upconv_layers(self.n_up):
            cout = 3 if name == "deconv0" else scaled(cout, width)
            upconv[name] = UpConv(cin, cout, kernel, stride, pad, learn_upconv_bias)
            if name != "deconv0":  # linear output layer
                upconv[f"relu_{name}"] = lrelu()
            cin = cout
        self.upconv = nn.Sequential(upconv)
        self.output = FromCaffeUnits() if output_space == "caffe" else PipelineOffset()

    @staticmethod
    def _bridge_rule(side_h: int, side_w: int, start: int) -> str:
        """How the map head meets the up-convolution stack from an s×s code: 'pad0' (s − 2 = start, faithful
        6 → 4 at 227), 'pad1' (s = start), 'code' (square s > start: the stack starts at s and keeps its last
        up-convolutions), else 'adaptive' (pad 1, then adaptive average pooling to start×start)."""
        if side_h == side_w == start + 2:
            return "pad0"
        if side_h == side_w == start:
            return "pad1"
        if side_h == side_w > start:
            return "code"
        return "adaptive"

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """code (B, *in_shape) → pipeline images (B, 3, R, R)."""
        if tuple(code.shape[1:]) != self.in_shape:
            raise ValueError(f"Generator built for codes of shape (B, {', '.join(map(str, self.in_shape))}) "
                             f"got {tuple(code.shape)}; build it with in_shape={tuple(code.shape[1:])}")
        full = self.upconv(self.head(code))  # (B, 3, 64·start, 64·start) in the output space
        o, r = self.crop_offset, self.resolution
        return self.output(full[..., o : o + r, o : o + r])
