"""CaffeNet (the paper's "AlexNet") faithful to Caffe, and torchvision-layout AlexNet, with named taps.

Both are `TappedNet`s: an ordered list of stages named by their Caffe blob, so `net(x, tap="pool5")`
runs the stages up to `pool5` and nothing after it. Conv taps are read after ReLU and `fc6`/`fc7` after
ReLU, because Caffe's ReLU works in place and overwrites those blobs; `fc8` is the logits.
`pool5` is what the paper calls CONV5 (256×6×6 at 227×227).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from repro.errors import DeepsimError
from repro.weights import alexnet_tv_state_dict

# ILSVRC-2012 channel means in BGR (the mean image of ../shared/assets/caffe/ilsvrc_2012_mean.npy,
# averaged per channel); the training data layer of the original used 104/117/123.
ILSVRC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

CAFFENET_TAPS = ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")
ALEXNET_TV_TAPS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


class CaffeInput(nn.Module):
    """Pipeline images (B, 3, H, W) RGB [0, 1] → Caffe input: BGR, 0–255, minus the ILSVRC mean.

    The mean is per channel (`mean_bgr`) or a full mean image (3, h, w) which is centre-cropped to the
    input size, as Caffe's `transform_param { mean_file }` does; resized first when smaller runs need it.
    """

    def __init__(self, mean_bgr: Sequence[float] | torch.Tensor = ILSVRC_MEAN_BGR):
        super().__init__()
        mean = torch.as_tensor(mean_bgr, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1) if mean.dim() == 1 else mean.unsqueeze(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bgr = images.flip(1) * 255.0
        mean = self.mean
        if mean.shape[-1] > 1:  # full mean image: centre-crop to the input size (resize if smaller)
            h, w = bgr.shape[-2:]
            if mean.shape[-2] < h or mean.shape[-1] < w:
                mean = nn.functional.interpolate(mean, size=(h, w), mode="bilinear", align_corners=False)
            top, left = (mean.shape[-2] - h) // 2, (mean.shape[-1] - w) // 2
            mean = mean[..., top : top + h, left : left + w]
        return bgr - mean

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe input → pipeline images (for visualising what a Caffe generator produced)."""
        return ((x + self.mean) / 255.0).flip(1)


class TorchvisionInput(nn.Module):
    """Pipeline images RGB [0, 1] → torchvision normalisation (x − mean) / std."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN_RGB, std: Sequence[float] = IMAGENET_STD_RGB):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class UntrainedTapError(DeepsimError, ValueError):
    """A tap whose weights are torch's random initialisation, not trained ones (the shipped AlexNet's fc6–fc8):
    its features would differ from build to build and mean nothing."""


class TappedNet(nn.Module):
    """Stages in order, each named by the Caffe blob it produces; stop at the requested tap.

    `untrained_taps` (set by a builder that loads only some layers, e.g. `AlexNetTV.pretrained`) are refused
    by `forward`, `features` and `require_tap`: randomly initialised layers must never pass for trained ones."""

    untrained_taps: tuple[str, ...] = ()
    untrained_note = ""  # why, and what gives those layers real weights (said in the error)

    def __init__(self, stages: "OrderedDict[str, nn.Module]", transform: nn.Module):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.transform = transform

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(self.stages.keys())

    def _check(self, taps: Iterable[str]) -> None:
        for tap in taps:
            if tap not in self.stages:
                raise ValueError(f"unknown tap {tap!r}; this network has {', '.join(self.taps)}")
            if tap in self.untrained_taps:
                raise UntrainedTapError(f"tap {tap} has no trained weights, only torch's random initialisation: "
                                        f"{self.untrained_note or 'load its weights first'}")

    def forward(self, x: torch.Tensor, tap: str = "fc8") -> torch.Tensor:
        """x: network input (already transformed). Runs stages up to and including `tap`, no further."""
        self._check([tap])
        for name, stage in self.stages.items():
            x = stage(x)
            if name == tap:
                return x
        raise AssertionError("unreachable")

    def features(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
        """{tap: activation} for several taps in one pass that stops at the deepest one."""
        self._check(taps)
        wanted, out = set(taps), {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def require_tap(net: nn.Module, tap: str, name: str = "") -> None:
    """Refuse, before any image is read, a tap that `net` (any tapped network: `net.taps`) cannot give: an
    unknown one (ValueError naming the choices), or one without trained weights (`UntrainedTapError`)."""
    if tap not in net.taps:
        raise ValueError(f"unknown tap {tap!r} for {name or type(net).__name__}; choose from {', '.join(net.taps)}")
    if isinstance(net, TappedNet):
        net._check([tap])


def _conv_relu(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, groups=groups), nn.ReLU(inplace=True))


def _fc_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.ReLU(inplace=True))


def caffe_pool_out(size: int, kernel: int = 3, stride: int = 2, pad: int = 0) -> int:
    """Caffe's pooling output size: rounds up, then drops a window starting inside the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class CaffeNet(TappedNet):
    """BVLC reference CaffeNet (bvlc_reference_caffenet_deploy.prototxt).

    96/256/384/384/256 channels, groups=2 on conv2/4/5; conv → ReLU → pool → LRN (CaffeNet pools before
    normalising, unlike bvlc_alexnet); LRN size 5, α 1e-4, β 0.75, k 1 (torch divides α by size as Caffe
    does); max-pool 3/2 with `ceil_mode=True` because Caffe rounds pooled sizes up (identical at 227,
    different at 224). Input: BGR 0–255 minus the ILSVRC mean, 227×227. Dropout is omitted (inference).
    """

    def __init__(self, resolution: int = 227, mean_bgr: Sequence[float] | torch.Tensor = ILSVRC_MEAN_BGR):
        side = resolution
        for _ in range(3):  # conv1 stride 4, then three ceil pools; convs 2–5 keep the size
            side = caffe_pool_out((side - 11) // 4 + 1) if _ == 0 else caffe_pool_out(side)
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
        stages = OrderedDict(
            conv1=_conv_relu(3, 96, 11, stride=4),
            pool1=pool(),
            norm1=lrn(),
            conv2=_conv_relu(96, 256, 5, pad=2, groups=2),
            pool2=pool(),
            norm2=lrn(),
            conv3=_conv_relu(256, 384, 3, pad=1),
            conv4=_conv_relu(384, 384, 3, pad=1, groups=2),
            conv5=_conv_relu(384, 256, 3, pad=1, groups=2),
            pool5=pool(),
            fc6=nn.Sequential(nn.Flatten(), *_fc_relu(256 * side * side, 4096)),
            fc7=_fc_relu(4096, 4096),
            fc8=nn.Linear(4096, 1000),
        )
        super().__init__(stages, CaffeInput(mean_bgr))
        self.resolution = resolution
        self.pool5_side = side

    # Caffe blob-layer name → our parameter prefix, for loading converted or hand-made weights.
    LAYERS = {
        "conv1": "stages.conv1.0", "conv2": "stages.conv2.0", "conv3": "stages.conv3.0", "conv4": "stages.conv4.0",
        "conv5": "stages.conv5.0", "fc6": "stages.fc6.1", "fc7": "stages.fc7.0", "fc8": "stages.fc8",
    }

    def load_caffe_blobs(self, blobs: dict[str, Sequence]) -> None:
        """Load {layer: [weight, bias]} as stored in a caffemodel; every layer matched once, shapes asserted."""
        missing = set(self.LAYERS) - set(blobs)
        extra = set(blobs) - set(self.LAYERS)
        if missing or extra:
            raise ValueError(f"CaffeNet weights do not fit: missing layers {sorted(missing)}, unexpected {sorted(extra)}")
        state = {}
        for layer, prefix in self.LAYERS.items():
            weight, bias = (torch.as_tensor(b, dtype=torch.float32) for b in blobs[layer])
            for suffix, value in (("weight", weight), ("bias", bias)):
                expected = self.state_dict()[f"{prefix}.{suffix}"].shape
                if value.numel() != expected.numel():
                    raise ValueError(f"CaffeNet layer {layer} {suffix}: {tuple(value.shape)} does not fit {tuple(expected)}")
                state[f"{prefix}.{suffix}"] = value.reshape(expected)
        state.update({k: v for k, v in self.state_dict().items() if k.startswith("transform.")})
        self.load_state_dict(state, strict=True)

    @classmethod
    def random(cls, seed: int = 0, resolution: int = 227) -> "CaffeNet":
        """The paper's third comparator: CaffeNet with random weights, drawn as Caffe's solver would.

        Gaussian weights (std 0.01 for convs and fc8, 0.005 for fc6/fc7) and constant biases (1 for
        conv2/4/5 and fc6/7, 0 elsewhere) from bvlc_reference_caffenet's train_val.prototxt, with a fixed
        seed so the comparator is reproducible.
        """
        with torch.random.fork_rng(devices=[]):  # torch's default init draws (all overwritten below) leave the caller's RNG
            net = cls(resolution)
        gen = torch.Generator().manual_seed(seed)
        std = {"fc6": 0.005, "fc7": 0.005}
        bias = {"conv2": 1.0, "conv4": 1.0, "conv5": 1.0, "fc6": 1.0, "fc7": 1.0}
        params = dict(net.named_parameters())
        with torch.no_grad():
            for layer, prefix in cls.LAYERS.items():
                w = params[f"{prefix}.weight"]
                w.copy_(torch.randn(w.shape, generator=gen) * std.get(layer, 0.01))
                params[f"{prefix}.bias"].fill_(bias.get(layer, 0.0))
        return net


class AlexNetTV(TappedNet):
    """torchvision-layout AlexNet (64/192/384/256/256, no groups, no LRN, floor pooling, conv1 pad 2).

    This is the layout of the real pretrained weights we can obtain (`repro.weights`): conv1–conv5 are
    ImageNet-trained; fc6–fc8 are not shipped and stay randomly initialised, so taps after pool5 are
    only meaningful when weights are loaded by the user. Input: RGB normalised with ImageNet mean/std.
    Pooling follows torchvision (floor), not Caffe, because that is how these weights were trained.
    """

    def __init__(self, resolution: int = 224):
        pool = lambda: nn.MaxPool2d(3, 2)  # noqa: E731
        side = (resolution + 4 - 11) // 4 + 1
        for _ in range(3):
            side = (side - 3) // 2 + 1
        stages = OrderedDict(
            conv1=_conv_relu(3, 64, 11, stride=4, pad=2),
            pool1=pool(),
            conv2=_conv_relu(64, 192, 5, pad=2),
            pool2=pool(),
            conv3=_conv_relu(192, 384, 3, pad=1),
            conv4=_conv_relu(384, 256, 3, pad=1),
            conv5=_conv_relu(256, 256, 3, pad=1),
            pool5=pool(),
            fc6=nn.Sequential(nn.Flatten(), *_fc_relu(256 * side * side, 4096)),
            fc7=_fc_relu(4096, 4096),
            fc8=nn.Linear(4096, 1000),
        )
        super().__init__(stages, TorchvisionInput())
        self.resolution = resolution
        self.pool5_side = side

    # torchvision `features.<i>` → our stage.
    TABLE = {"features.0": "stages.conv1.0", "features.3": "stages.conv2.0", "features.6": "stages.conv3.0",
             "features.8": "stages.conv4.0", "features.10": "stages.conv5.0"}

    def load_torchvision_convs(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision conv weights by an explicit table: every tensor matched once, shape asserted."""
        ours = self.state_dict()
        expected = {f"{tv}.{s}" for tv in self.TABLE for s in ("weight", "bias")}
        if set(state) != expected:
            raise ValueError(f"AlexNet conv weights: expected keys {sorted(expected)}, got {sorted(state)}")
        with torch.no_grad():
            for tv, mine in self.TABLE.items():
                for suffix in ("weight", "bias"):
                    src, dst = state[f"{tv}.{suffix}"], ours[f"{mine}.{suffix}"]
                    if src.shape != dst.shape:
                        raise ValueError(f"{tv}.{suffix}: shape {tuple(src.shape)} != expected {tuple(dst.shape)}")
                    dst.copy_(src)

    # torchvision `classifier.<i>` → our fully connected stage (a full torchvision AlexNet state dict).
    FC_TABLE = {"classifier.1": "stages.fc6.1", "classifier.4": "stages.fc7.0", "classifier.6": "stages.fc8"}

    @classmethod
    def from_file(cls, path: str | Path, resolution: int = 224) -> "AlexNetTV":
        """Every layer from a full torchvision AlexNet state dict (`torchvision.models.alexnet().state_dict()`
        saved with torch.save, e.g. torchvision's alexnet-owt-7be5be79.pth): the only way to get real fc6–fc8
        in this layout. Keys are matched by explicit tables, every tensor once, shapes asserted; fc6 expects
        pool5 at 6×6, i.e. resolution 224–227."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # pickle/zip errors of a file that is not a torch checkpoint
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            # torch's "Weights only load failed" preamble suggests weights_only=False: the reason is further down
            unpickler = [line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line]
            reason = (unpickler[-1] if unpickler else lines[0]) if lines else type(err).__name__
            raise ValueError(f"{path} is not a torch state dict file (torch.load: {reason})") from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a torchvision AlexNet state dict (a dict of tensors)")
        net = cls(resolution)
        convs = {k: v for k, v in state.items() if k.startswith("features.")}
        net.load_torchvision_convs(convs)
        expected = {f"{tv}.{s}" for tv in cls.FC_TABLE for s in ("weight", "bias")}
        fcs = {k: v for k, v in state.items() if not k.startswith("features.")}
        if set(fcs) != expected:
            raise ValueError(f"{path}: expected classifier keys {sorted(expected)}, got {sorted(fcs)}")
        ours = net.state_dict()
        with torch.no_grad():
            for tv, mine in cls.FC_TABLE.items():
                for suffix in ("weight", "bias"):
                    src, dst = fcs[f"{tv}.{suffix}"], ours[f"{mine}.{suffix}"]
                    if src.shape != dst.shape:
                        raise ValueError(f"{path}: {tv}.{suffix} has shape {tuple(src.shape)}, expected "
                                         f"{tuple(dst.shape)} at resolution {resolution} (fc6 needs pool5 at 6×6)")
                    dst.copy_(src)
        return net

    @classmethod
    def pretrained(cls, resolution: int = 224) -> "AlexNetTV":
        net = cls(resolution)
        net.load_torchvision_convs(alexnet_tv_state_dict())
        net.untrained_taps = ("fc6", "fc7", "fc8")  # the shipped weights have conv1–conv5 only
        net.untrained_note = ("the shipped pretrained AlexNet has conv1–conv5 only; give a full torchvision "
                              "AlexNet state dict as its weights file (torch.save(alexnet.state_dict(), FILE)), "
                              "or use a tap up to pool5")
        return net
