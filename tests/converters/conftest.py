"""Fixtures for the converter tests: real asset files (sha256-checked) and seeded random weights."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from converters.caffe2onnx import caffe_to_onnx
from converters.caffe_net import read_net

# sha256 of the asset files these tests read (../shared/assets/README.md manifest).
ASSET_SHA256 = {
    "lenet/lenet.prototxt": "c0455d92682937813a6ab5f6bbe9ae3753b454eba00686eddab0335de9712beb",
    "lenet/lenet_iter_10000.caffemodel": "846f9133807d2314ca63382069646ec8c11ac87881825efc6b5145339351f967",
    "squeezenet-dc/SqueezeNet_deploy.prototxt": "3bcb0e792e2b50ddeb955b178ba6742e28d8950956915348eba355652040674c",
    "squeezenet-dc/compressed_SqueezeNet.net": "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261",
    "caffe/bvlc_reference_caffenet_deploy.prototxt": "922248a4d2f6aac1cc8e7e5dbd996cc2ecd3356480d67c198f6cf96b12311a04",
    "caffe/bvlc_alexnet_deploy.prototxt": "b564ba76416b4ac1e062c6621cbd80d9c19304ba152d9d791c75870f3182c4fa",
    "caffe/ilsvrc_2012_mean.npy": "97eefba7e046ee097121ad18564329636d2f9c153b748c7313653cae8594a149",
    "caffe/synset_words.txt": "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355",
    "videonet/unsup_net_deploy.prototxt": "b0675f3ced13e66432c795481a0a7adb0337fc40ba02d037ea030a3f02eedc7e",
    "videonet/video_mean.binaryproto": "192dab5f6c3c833d93bc392c8348bdc9228e13f0eb67c514a590fed7253d11b4",
}


@pytest.fixture(scope="session")
def asset(assets) -> Callable[[str], Path]:
    """asset("lenet/lenet.prototxt") → its path, after checking it exists and has the expected sha256."""
    checked: dict[str, Path] = {}

    def get(rel: str) -> Path:
        if rel not in checked:
            path = assets / rel
            if not path.is_file():
                pytest.fail(f"shared asset {path} is missing; the converter tests need ../shared/assets (or $DEEPSIM_ASSETS)")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if rel in ASSET_SHA256 and digest != ASSET_SHA256[rel]:
                pytest.fail(f"shared asset {path} has sha256 {digest[:12]}…, expected {ASSET_SHA256[rel][:12]}…; restore the original")
            checked[rel] = path
        return checked[rel]

    return get


def _random_weights(prototxt: Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Seeded random weights for exactly the blobs `prototxt` implies.

    He-normal weights (std √(2 / fan-in)) keep activations at the input's scale through ReLU stacks,
    so deep taps neither vanish nor explode and relative errors stay meaningful; small random biases;
    positive variances and scales for BatchNorm/Scale.
    """
    rng = np.random.default_rng(seed)

    def draw(layer, expected):
        blobs = []
        for role, shape in expected:
            if role == "weight":
                fan_in = np.prod(shape[1:]) if layer.type != "Deconvolution" else shape[0] * np.prod(shape[2:])
                blobs.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
            elif role in ("variance", "scale"):
                blobs.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            elif role == "scale factor":
                blobs.append(np.full(shape, 2.0, np.float32))  # Caffe's running-sum weight: statistics are halved
            else:  # bias, mean
                blobs.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1))
        return blobs

    return caffe_to_onnx(read_net(prototxt), draw).weights


def _assert_close(ours: np.ndarray, reference: np.ndarray, what: str, rel: float = 1e-4) -> None:
    """max |ours − reference| ≤ rel · max |reference| (the tolerance of the converter acceptance tests)."""
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    scale = float(np.abs(reference).max())
    err = float(np.abs(ours.astype(np.float64) - reference).max())
    assert scale > 0, f"{what}: the reference is all zeros; the test would prove nothing"
    assert err <= rel * scale, f"{what}: max abs difference {err:.3g} > {rel:g} × max |ref| {scale:.3g}"


@pytest.fixture(scope="session")
def random_weights() -> Callable[..., dict[str, list[np.ndarray]]]:
    return _random_weights


@pytest.fixture(scope="session")
def assert_close() -> Callable[..., None]:
    return _assert_close
