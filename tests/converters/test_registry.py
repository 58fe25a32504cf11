"""The comparator registry builds the user-file comparators (VideoNet caffemodel, any ONNX + tap)."""
from __future__ import annotations

import pytest
import torch

from converters.caffe2onnx import convert_caffe
from converters.caffemodel import write_caffemodel
from repro.comparators import build_comparator


@pytest.mark.slow
def test_videonet_and_onnx_comparators_from_user_files(tmp_path, asset, random_weights):
    prototxt = asset("videonet/unsup_net_deploy.prototxt")
    caffemodel = write_caffemodel(tmp_path / "color_model.caffemodel", random_weights(prototxt, seed=1), prototxt)
    videonet = build_comparator("videonet", "pool5", resolution=227, weights=str(caffemodel))
    images = torch.rand(2, 3, 227, 227, requires_grad=True)
    features = videonet(images)
    assert features.shape == (2, 256, 6, 6)
    features.sum().backward()  # gradients reach the generator's images, not the frozen weights
    assert images.grad is not None and all(p.grad is None for p in videonet.parameters())
    mean = videonet.net.transform.mean.flatten().tolist()
    assert [round(m) for m in mean] == [97, 103, 108], "VideoNet's own mean file (BGR ≈ 96.6/102.7/108.0)"

    onnx_path = tmp_path / "videonet.onnx"
    import onnx

    onnx.save(convert_caffe(prototxt, caffemodel).model, onnx_path)
    from_onnx = build_comparator("onnx", "pool5", resolution=227, weights=str(onnx_path))
    with torch.no_grad():  # same raw (BGR, mean-subtracted) input → same pool5 from both routes
        x = torch.randn(1, 3, 227, 227) * 50
        assert torch.allclose(from_onnx.net(x, "pool5"), videonet.net(x, "pool5"), atol=1e-4)
