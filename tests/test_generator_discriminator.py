"""Generator and discriminator: topology pinned to the original prototxts, shapes at every resolution, init,
frozen up-convolution biases, output convention, gradients, conditioning and clear errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from repro.nets.caffenet import ILSVRC_MEAN_BGR, AlexNetTV, CaffeNet
from repro.nets.discriminator import Discriminator, conv_sides, min_resolution
from repro.nets.generator import Generator, UpConv

POOL5_SIDE = {64: 1, 96: 2, 128: 3, 227: 6}  # CaffeNet (ceil pooling) and torchvision AlexNet (floor) agree here


# ---- a tiny prototxt reader: enough for layer name/type/shape fields -------------------------------------
def read_layers(path: Path) -> list[dict]:
    """Each `layer { ... }` block → {name, type, num_output, kernel_size, stride, pad, negative_slope,
    msra_coeff, dropout_ratio, lr_mult (list, one per param block)}; absent fields are left out."""
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    layers, pos = [], 0
    while (start := text.find("layer {", pos)) >= 0:
        depth, i = 0, start
        while True:  # match braces to find the end of this layer block
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0 and text[i - 1] == "}":
                break
        block, pos = text[start:i], i
        layer: dict = {key: re.search(rf'{key}:\s*"([^"]+)"', block)[1] for key in ("name", "type")}
        for key in ("num_output", "kernel_size", "stride", "pad"):
            if m := re.search(rf"\b{key}:\s*(\d+)", block):
                layer[key] = int(m[1])
        for key in ("negative_slope", "msra_coeff", "dropout_ratio"):
            if m := re.search(rf"\b{key}:\s*([\d.eE+-]+)", block):
                layer[key] = float(m[1])
        layer["lr_mult"] = [float(v) for v in re.findall(r"lr_mult:\s*([\d.]+)", block)]
        layers.append(layer)
    return layers


def input_dims(path: Path) -> tuple[int, ...]:
    shape = re.search(r"input_shape\s*\{([^}]*)\}", path.read_text())[1]
    return tuple(int(d) for d in re.findall(r"dim:\s*(\d+)", shape))[1:]  # drop the batch


def generator_layers(g: Generator) -> list[tuple[str, nn.Module]]:
    return list(g.head.named_children()) + list(g.upconv.named_children())


KIND = {nn.Linear: "InnerProduct", nn.Conv2d: "Convolution", UpConv: "Deconvolution"}


def layer_signature(name: str, m: nn.Module) -> dict:
    if isinstance(m, nn.Linear):
        return {"name": name, "type": "InnerProduct", "num_output": m.out_features}
    return {"name": name, "type": KIND[type(m)], "num_output": m.out_channels, "kernel_size": m.kernel_size[0],
            "stride": m.stride[0], "pad": m.padding[0]}


def prototxt_signature(layer: dict) -> dict:
    if layer["type"] == "InnerProduct":
        return {k: layer[k] for k in ("name", "type", "num_output")}
    return {"name": layer["name"], "type": layer["type"], "num_output": layer["num_output"],
            "kernel_size": layer["kernel_size"], "stride": layer.get("stride", 1), "pad": layer.get("pad", 0)}


@pytest.fixture(scope="module")
def released(assets):
    return {name: assets / "reference-prototxt" / "synthesizing" / f"generator_{name}.prototxt"
            for name in ("fc6", "fc7", "pool5")}


# ---- generator: faithful topology ----------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["fc6", "fc7", "pool5"])
def test_generator_matches_released_prototxt(released, layer):
    path = released[layer]
    g = Generator(input_dims(path), resolution=227, width=1.0)
    proto = read_layers(path)
    weighted = [l for l in proto if l["type"] in ("InnerProduct", "Convolution", "Deconvolution")]
    ours = [(n, m) for n, m in generator_layers(g) if type(m) in KIND]
    assert [layer_signature(n, m) for n, m in ours] == [prototxt_signature(l) for l in weighted]
    # Bias learnable exactly where the prototxt gives it a non-zero lr_mult (0 on every Deconvolution).
    for (name, module), l in zip(ours, weighted):
        bias_learns = l["lr_mult"][1] > 0
        assert any(p is module.bias for p in module.parameters()) == bias_learns, name
    # Leaky ReLU 0.3 after exactly the layers the prototxt rectifies, with the prototxt's names.
    relus = [(l["name"], l["negative_slope"]) for l in proto if l["type"] == "ReLU"]
    assert [(n, m.negative_slope) for n, m in generator_layers(g) if isinstance(m, nn.LeakyReLU)] == relus
    assert not isinstance(list(g.upconv.children())[-1], nn.LeakyReLU), "linear output layer"
    if layer != "pool5":  # Caffe's Reshape to 256×4×4 before deconv5
        reshape = next(l for l in proto if l["type"] == "Reshape")
        assert g.head.reshape.unflattened_size == (256, 4, 4) and reshape["name"] == "reshape"


def test_training_copy_crops_to_227_from_256(assets):
    """kamitani/generator.prototxt: the same stack, then CropSimple to 227 — our 256 → 227, offset 14."""
    proto = read_layers(assets / "reference-prototxt" / "kamitani" / "generator.prototxt")
    assert [l["name"] for l in proto if l["type"] == "Deconvolution"] == [
        "deconv5", "conv5_1", "deconv4", "conv4_1", "deconv3", "conv3_1", "deconv2", "deconv1", "deconv0"]
    text = (assets / "reference-prototxt" / "kamitani" / "generator.prototxt").read_text()
    assert re.search(r"crop_height:\s*227", text)
    g = Generator((4096,), resolution=227, width=0.125)
    assert (g.full_side, g.crop_offset) == (256, 14)


# ---- generator: shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [64, 128, 227])
@pytest.mark.parametrize("in_shape", ["pool5", (4096,), (1000,), (37,)], ids=["pool5", "fc6-fc7", "fc8", "vector"])
def test_generator_output_shape(resolution, in_shape):
    if in_shape == "pool5":
        in_shape = (256, POOL5_SIDE[resolution], POOL5_SIDE[resolution])
    g = Generator(in_shape, resolution=resolution, width=0.125)
    with torch.no_grad():
        images = g(torch.rand(2, *in_shape))
    assert images.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("resolution, bridge", [(64, "pad1"), (96, "pad1"), (128, "code"), (227, "pad0")])
def test_pool5_bridge_for_both_comparator_layouts(resolution, bridge):
    """The true pool5 shape of either network feeds the generator; 6 → 4 by Rconv8 pad 0 at 227 (faithful)."""
    for net in (CaffeNet(resolution).eval(), AlexNetTV(resolution).eval()):
        with torch.no_grad():
            shape = tuple(net(net.transform(torch.zeros(1, 3, resolution, resolution)), tap="pool5").shape[1:])
        assert shape == (256, POOL5_SIDE[resolution], POOL5_SIDE[resolution]), type(net).__name__
        g = Generator(shape, resolution=resolution, width=0.125)
        assert g.bridge == bridge
        assert g.head.Rconv8.padding == ((0, 0) if bridge == "pad0" else (1, 1))
        assert ("pool_to_start" in dict(g.head.named_children())) == (bridge == "adaptive")
        with torch.no_grad():
            assert g.head(torch.rand(1, *shape)).shape == (1, 64, g.start, g.start)
            assert g(torch.rand(2, *shape)).shape == (2, 3, resolution, resolution)


def test_a_code_grid_larger_than_the_start_reaches_the_stack_unpooled():
    """Protocol CONV5*: the 6×6 code at R=96 starts the stack at 6×6 (no pooling to 2×2) and four ×2
    up-convolutions give exactly 96 px, 16 px per code cell; the stack keeps the released stack's tail."""
    g = Generator((256, 6, 6), resolution=96, width=0.125)
    assert (g.bridge, g.start, g.n_up, g.full_side, g.crop_offset) == ("code", 6, 4, 96, 0)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in g.modules())
    assert [n for n in dict(g.upconv.named_children()) if not n.startswith("relu")] == [
        "deconv3", "conv3_1", "deconv2", "deconv1", "deconv0"]
    with torch.no_grad():
        assert g.head(torch.rand(1, 256, 6, 6)).shape[-2:] == (6, 6)
        code = torch.rand(2, 256, 6, 6)
        assert g(code).shape == (2, 3, 96, 96)
        moved = code.clone()
        moved[:, :, 0, 0] += 5.0  # one corner cell: the far corner of the image barely moves
        change = (g(moved) - g(code)).abs()
        assert change[..., :16, :16].mean() > 3 * change[..., -16:, -16:].mean()
    # 3×3 code at 128 px: 3 → 192, cropped to 128 (the old rule pooled it to 2×2)
    g = Generator((256, 3, 3), resolution=128, width=0.125)
    assert (g.bridge, g.start, g.n_up, g.full_side, g.crop_offset) == ("code", 3, 6, 192, 32)


@pytest.mark.parametrize("resolution, offset, full", [(227, 14, 256), (96, 16, 128), (64, 0, 64)])
def test_centre_crop_offset(resolution, offset, full):
    g = Generator((4096,), resolution=resolution, width=0.125).eval()
    seen = {}
    g.upconv.register_forward_hook(lambda _m, _i, out: seen.update(full=out.clone()))
    with torch.no_grad():
        images = g(torch.rand(2, 4096) * 5)
        uncropped = seen["full"]
        assert uncropped.shape[-1] == full
        expected = g.output(uncropped[..., offset : offset + resolution, offset : offset + resolution])
        assert torch.equal(images, expected)
        if offset > 0:  # one pixel off would be visibly different
            o = offset - 1
            shifted = g.output(uncropped[..., o : o + resolution, o : o + resolution])
            assert not torch.allclose(images, shifted)


def test_generator_rejects_wrong_code_shape():
    g = Generator((256, 6, 6), resolution=227, width=0.125)
    with pytest.raises(ValueError, match=r"in_shape=\(256, 3, 3\)"):
        g(torch.zeros(1, 256, 3, 3))
    with pytest.raises(ValueError, match="in_shape"):
        Generator((16, 16))


# ---- generator: output convention, init, biases, gradients ---------------------------------------------
def test_output_is_caffe_units_mapped_to_pipeline_images():
    """A zero code gives exactly the mean colour (zero biases): the net predicts BGR 0–255 minus the mean."""
    g = Generator((64,), resolution=64, width=0.125)
    with torch.no_grad():
        grey = g(torch.zeros(1, 64))
    mean_rgb = torch.tensor(ILSVRC_MEAN_BGR[::-1]) / 255
    assert torch.allclose(grey[0].mean((1, 2)), mean_rgb, atol=1e-6) and grey.std((2, 3)).max() < 1e-6
    # Round trip: the Caffe units G produced reach D (and a Caffe comparator) unchanged.
    caffe_units = torch.randn(2, 3, 64, 64) * 40
    d = Discriminator(resolution=64, width=0.25)
    assert torch.allclose(d.transform(g.output(caffe_units)), caffe_units, atol=1e-3)
    # A random code at init stays near mean grey, not saturated.
    with torch.no_grad():
        images = Generator((4096,), resolution=64, width=0.25)(torch.relu(torch.randn(8, 4096)) * 3)
    assert (images.mean((0, 2, 3)) - mean_rgb).abs().max() < 0.05
    pipeline = Generator((64,), resolution=64, width=0.125, output_space="pipeline")
    with torch.no_grad():
        assert torch.allclose(pipeline(torch.zeros(1, 64)), torch.full((1, 3, 64, 64), 0.45))


def test_output_is_linear_not_clamped():
    g = Generator((64,), resolution=64, width=0.125)
    with torch.no_grad():
        g.upconv.deconv0.weight.mul_(1e4)
        images = g(torch.randn(4, 64) * 10)
    assert images.min() < 0 and images.max() > 1


def test_leaky_relu_slope():
    g = Generator((256, 6, 6), resolution=227, width=0.125)
    slopes = {m.negative_slope for m in g.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.3}
    assert not any(isinstance(m, nn.ReLU) for m in g.modules())
    assert {m.negative_slope for m in Generator((8,), 64, 0.125, leaky_slope=0.2).modules()
            if isinstance(m, nn.LeakyReLU)} == {0.2}


def test_msra_init_follows_training_copy():
    """std = coeff·sqrt(2/fan_in), Caffe fan_in: 1.8 for stride-2 up-convolutions, 0.9 for stride 1, 1 for FC."""
    torch.manual_seed(0)
    g = Generator((4096,), resolution=227, width=0.5)
    for name, m in generator_layers(g):
        if isinstance(m, UpConv):
            fan_in = m.out_channels * m.kernel_size[0] ** 2  # Caffe: count / shape[0] of an (in, out, k, k) blob
            expected = (1.8 if m.stride[0] == 2 else 0.9) * (2 / fan_in) ** 0.5
        elif isinstance(m, nn.Linear):
            expected = (2 / m.in_features) ** 0.5
        else:
            continue
        assert m.weight.std().item() == pytest.approx(expected, rel=0.1), name
        assert m.weight.mean().abs().item() < 0.1 * expected, name


def test_upconv_biases_zero_and_frozen_by_default():
    torch.manual_seed(0)
    g = Generator((32,), resolution=64, width=0.125)
    names = dict(g.named_parameters())
    upconvs = [(n, m) for n, m in g.upconv.named_children() if isinstance(m, UpConv)]
    assert len(upconvs) == 9
    for name, m in upconvs:
        assert f"upconv.{name}.bias" not in names and not m.bias.requires_grad
        assert torch.count_nonzero(m.bias) == 0
        assert f"upconv.{name}.bias" in g.state_dict(), "kept in checkpoints like Caffe's blob"
    assert all(names[f"head.{fc}.bias"].requires_grad for fc in ("defc7", "defc6", "defc5"))
    g.requires_grad_(True)  # a phase switch must not unfreeze them
    opt = torch.optim.Adam(g.parameters(), lr=0.1)
    before = g.upconv.deconv5.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        g(torch.randn(4, 32)).square().mean().backward()
        opt.step()
    assert all(torch.count_nonzero(m.bias) == 0 for _, m in upconvs)
    assert not torch.equal(before, g.upconv.deconv5.weight)

    learn = Generator((32,), resolution=64, width=0.125, learn_upconv_bias=True)
    assert isinstance(learn.upconv.deconv5.bias, nn.Parameter) and torch.count_nonzero(learn.upconv.deconv5.bias) == 0
    learn(torch.randn(4, 32)).square().mean().backward()
    assert learn.upconv.deconv0.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("in_shape", [(4096,), (256, 3, 3)], ids=["vector", "pool5"])
def test_generator_gets_gradients(in_shape):
    g = Generator(in_shape, resolution=128, width=0.125)
    target = torch.rand(2, 3, 128, 128)
    ((g(torch.rand(2, *in_shape)) - target) * 255).square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---- discriminator -------------------------------------------------------------------------------------
def test_discriminator_matches_training_copy(assets):
    proto = read_layers(assets / "reference-prototxt" / "kamitani" / "discriminator.prototxt")
    d = Discriminator(resolution=227, width=1.0)
    ours = [layer_signature(n, m) for n, m in list(d.convs.named_children()) + list(d.classifier.named_children())
            if type(m) in KIND]
    weighted = [prototxt_signature(l) for l in proto if l["type"] in ("Convolution", "InnerProduct")]
    assert ours == weighted
    assert [m.p for m in d.classifier if isinstance(m, nn.Dropout)] == [l["dropout_ratio"] for l in proto
                                                                        if l["type"] == "Dropout"]
    pool = next(l for l in proto if l["type"] == "Pooling")
    assert pool["kernel_size"] == conv_sides(227)[-1] == 11, "Caffe's 11×11 average pool is global at 227"
    assert all(l["lr_mult"] == [1.0, 1.0] for l in proto if l["type"] in ("Convolution", "InnerProduct"))
    assert all(p.requires_grad for p in d.parameters())
    # MSRA coefficients of the training copy: 0.1 on Dconv1 / Dfc6 / Dfc7, 1 elsewhere.
    torch.manual_seed(0)
    modules = dict(list(d.convs.named_children()) + list(d.classifier.named_children()))
    for l in proto:
        if l["type"] in ("Convolution", "InnerProduct"):
            w = modules[l["name"]].weight
            expected = l["msra_coeff"] * (2 / (w.numel() // w.shape[0])) ** 0.5
            assert w.std().item() == pytest.approx(expected, rel=0.1), l["name"]


def test_discriminator_spatial_sizes():
    assert conv_sides(227) == [56, 52, 25, 23, 11]
    assert conv_sides(64) == [15, 11, 5, 3, 1]
    d = Discriminator(resolution=227, width=0.25).eval()
    sides = []
    for m in d.convs:
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
    with torch.no_grad():
        logits = d(torch.rand(2, 3, 227, 227))
    assert sides == [56, 52, 25, 23, 11] and logits.shape == (2, 2)


@pytest.mark.parametrize("resolution", [64, 96, 128])
def test_discriminator_reduced_resolutions(resolution):
    d = Discriminator(resolution=resolution, width=0.25).eval()
    with torch.no_grad():
        assert d(torch.rand(3, 3, resolution, resolution)).shape == (3, 2)


def test_discriminator_rejects_too_small_resolution():
    assert min_resolution() == 63
    Discriminator(resolution=63, width=0.25)
    with pytest.raises(ValueError, match=r"resolution 62.*at least 63"):
        Discriminator(resolution=62)


def test_discriminator_dropout_only_in_training():
    torch.manual_seed(0)
    d = Discriminator(resolution=64, width=0.5)
    images = torch.rand(4, 3, 64, 64)
    d.eval()
    with torch.no_grad():
        assert torch.equal(d(images), d(images))
        d.train()
        assert not torch.equal(d(images), d(images))


def test_discriminator_conditioned_on_features():
    torch.manual_seed(0)
    d = Discriminator(resolution=64, width=0.25, feature_dim=256)
    images, code = torch.rand(2, 3, 64, 64), torch.rand(2, 256, 1, 1)  # pool5 at 64, flattened inside
    logits = d(images, code)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert d.feature_branch.fc_feat1.weight.grad.abs().sum() > 0
    d.eval()
    with torch.no_grad():  # the logits depend on the code
        assert not torch.allclose(d(images, code), d(images, code * 0))
    with pytest.raises(ValueError, match="pass features"):
        d(images)
    with pytest.raises(ValueError, match="256 numbers"):
        d(images, torch.rand(2, 4096))
    with pytest.raises(ValueError, match="without feature_dim"):
        Discriminator(resolution=64, width=0.25)(images, code)


def test_global_pooling_taps_are_inverted_as_vectors():
    """SqueezeNet's pool_final (global average of the class-score maps) stays 1×1 at any resolution: the
    generator takes it as a vector, as fc8; CaffeNet's pool5 at 64 px is 1×1 only by size and stays a map."""
    from repro.comparators import build_comparator
    from repro.models import Inverter, feature_shape

    scores = build_comparator("squeezenet", "pool_final", 96)
    assert feature_shape(scores, 96) == (1000,)
    caffenet_pool5 = build_comparator("caffenet-random", "pool5", 64)
    assert feature_shape(caffenet_pool5, 64) == (256, 1, 1)
    model = Inverter(scores, Generator((1000,), resolution=96, width=0.125))
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        reconstruction, aux = model(images)
    assert aux["code"].shape == (2, 1000) and reconstruction.shape == (2, 3, 96, 96)
    assert torch.equal(aux["code"], scores(images).flatten(1))
