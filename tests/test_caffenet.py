"""CaffeNet / AlexNet faithfulness: Caffe's pooling arithmetic, LRN formula, tap shapes, early stopping."""
from __future__ import annotations

import pytest
import torch

from repro.nets.caffenet import CAFFENET_TAPS, AlexNetTV, CaffeInput, CaffeNet, caffe_pool_out


def test_caffe_pooling_rounds_up():
    # conv1 at 227 → 55 → pool 27 → 13 → 6: floor and ceil agree at 227 ...
    assert [caffe_pool_out(s) for s in (55, 27, 13)] == [27, 13, 6]
    # ... but at 224 conv1 gives 54 and Caffe's ceil gives 27 where floor would give 26.
    assert caffe_pool_out(54) == 27 and (54 - 3) // 2 + 1 == 26


@pytest.mark.parametrize("resolution, pool1, pool5", [(227, 27, 6), (224, 27, 6)])
def test_caffenet_sizes_follow_caffe(resolution, pool1, pool5):
    net = CaffeNet(resolution).eval()
    feats = net.features(torch.zeros(1, 3, resolution, resolution), ["pool1", "pool5"])
    assert feats["pool1"].shape[-1] == pool1
    assert feats["pool5"].shape[1:] == (256, pool5, pool5)


def test_caffenet_tap_shapes_at_227():
    net = CaffeNet.random(seed=0).eval()
    expected = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27), "conv2": (256, 27, 27),
                "pool2": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13),
                "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    with torch.no_grad():
        feats = net.features(torch.randn(2, 3, 227, 227) * 50, list(expected))
    for tap, shape in expected.items():
        assert tuple(feats[tap].shape[1:]) == shape, tap
    assert (feats["fc6"] >= 0).all() and (feats["fc7"] >= 0).all(), "fc6/fc7 are read after ReLU"
    assert (feats["fc8"] < 0).any(), "fc8 is logits, not rectified"
    assert net.taps == CAFFENET_TAPS


def test_grouped_convolutions():
    net = CaffeNet()
    groups = {name: net.stages[name][0].groups for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


def test_lrn_equals_caffe_formula():
    """Caffe ACROSS_CHANNELS: b_c = a_c / (k + α/n · Σ_{c' in window} a_c'^2)^β, zero-padded window."""
    net = CaffeNet()
    x = torch.randn(2, 96, 5, 5) * 30
    n, alpha, beta, k = 5, 1e-4, 0.75, 1.0
    sq = torch.nn.functional.pad(x**2, (0, 0, 0, 0, n // 2, n // 2))
    window = torch.stack([sq[:, c : c + n].sum(1) for c in range(x.shape[1])], 1)
    expected = x / (k + alpha / n * window) ** beta
    assert torch.allclose(net.stages["norm1"](x), expected, rtol=1e-5, atol=1e-5)


def test_tap_stops_early():
    net = CaffeNet().eval()
    ran = []
    for name, stage in net.stages.items():
        stage.register_forward_hook(lambda *_, name=name: ran.append(name))
    net(torch.zeros(1, 3, 227, 227), tap="pool5")
    assert ran[-1] == "pool5" and "fc6" not in ran


def test_unknown_tap_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tap 'conv6'"):
        CaffeNet()(torch.zeros(1, 3, 227, 227), tap="conv6")


def test_caffe_input_is_bgr_minus_mean():
    images = torch.zeros(1, 3, 4, 4)
    images[:, 0] = 1.0  # pure red
    out = CaffeInput((100.0, 110.0, 120.0))(images)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-100.0, -110.0, 255.0 - 120.0]))


def test_random_caffenet_is_seeded():
    a, b, c = CaffeNet.random(seed=1), CaffeNet.random(seed=1), CaffeNet.random(seed=2)
    wa, wb, wc = (n.stages["conv1"][0].weight for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert abs(wa.std().item() - 0.01) < 1e-3, "Caffe's gaussian filler std 0.01"
    assert torch.all(b.stages["conv2"][0].bias == 1.0)


def test_alexnet_tv_layout_and_taps():
    net = AlexNetTV(224).eval()
    channels = [net.stages[f"conv{i}"][0].out_channels for i in range(1, 6)]
    assert channels == [64, 192, 384, 256, 256]
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 224, 224), tap="pool5").shape == (1, 256, 6, 6)


def test_pretrained_alexnet_matches_torchvision(pretrained_alexnet):
    """Our layout with the cached weights equals torchvision's own AlexNet with the same weights."""
    import torchvision

    from repro.weights import alexnet_tv_state_dict

    tv = torchvision.models.alexnet(weights=None).eval()
    state = {**tv.state_dict(), **alexnet_tv_state_dict()}
    tv.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(pretrained_alexnet(x, tap="pool5"), tv.features(x), atol=1e-4)
