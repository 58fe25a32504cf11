"""Mean images in both Caffe formats."""
from __future__ import annotations

import numpy as np
import pytest

from converters.caffe_proto import array_blob
from converters.errors import ConversionError
from converters.means import centre_crop, channel_means, load_mean


def test_ilsvrc_mean_npy(asset):
    mean = load_mean(asset("caffe/ilsvrc_2012_mean.npy"))
    assert mean.shape == (3, 256, 256) and mean.dtype == np.float64
    np.testing.assert_allclose(channel_means(mean), [104.0, 116.7, 122.7], atol=0.05)  # BGR
    assert centre_crop(mean, 227).shape == (3, 227, 227)
    np.testing.assert_array_equal(centre_crop(mean, 227), mean[:, 14:241, 14:241])


def test_videonet_mean_binaryproto(asset):
    mean = load_mean(asset("videonet/video_mean.binaryproto"))
    assert mean.shape == (3, 227, 227)
    np.testing.assert_allclose(channel_means(mean), [96.6, 102.7, 108.0], atol=0.05)


def test_binaryproto_round_trip_and_bad_files(tmp_path):
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 5, 4)).astype(np.float32)
    for legacy in (False, True):
        path = tmp_path / f"mean{legacy}.binaryproto"
        path.write_bytes(array_blob(image, legacy_4d=legacy).SerializeToString())
        np.testing.assert_array_equal(load_mean(path), image[0])
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff" * 10)
    with pytest.raises(ConversionError, match="junk.binaryproto"):
        load_mean(tmp_path / "junk.binaryproto")
    (tmp_path / "flat.npy").write_bytes(b"")
    np.save(tmp_path / "flat.npy", np.zeros(7))
    with pytest.raises(ConversionError, match=r"flat.npy holds shape \(7,\)"):
        load_mean(tmp_path / "flat.npy")
