"""The pretrained AlexNet's fc6–fc8 are not shipped: a user's full torchvision AlexNet is loaded (every
tensor), a wrong file is refused, and the paper presets say in one line what they still need."""
from __future__ import annotations

import pytest
import torch
import torchvision

from repro.comparators import build_comparator
from repro.train import main


@pytest.fixture(scope="module")
def torchvision_alexnet_file(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_user_alexnet_file_gives_its_fc_layers(torchvision_alexnet_file):
    path, reference = torchvision_alexnet_file
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    comparator = build_comparator("alexnet", "fc8", 224, weights=str(path))
    with torch.no_grad():
        expected = reference(comparator.net.transform(images))
        assert torch.allclose(comparator(images), expected, atol=1e-4, rtol=1e-4)
        # the user's conv weights are the file's too, not the shipped ones
        shipped = build_comparator("alexnet", "conv5", 224)
        assert not torch.allclose(shipped(images), comparator.net(comparator.net.transform(images), "conv5"), atol=1e-2)


def test_shipped_alexnet_refuses_its_untrained_fc_taps_on_every_path():
    """Only conv1–5 of the pretrained AlexNet ship; its fc6–fc8 are torch's random initialisation (two builds
    gave fc6 features 2.04 apart). Every path refuses them, in one sentence saying what to give."""
    from repro import DeePSiMLoss
    from repro.comparators import build_net
    from repro.nets.caffenet import UntrainedTapError

    for tap in ("fc6", "fc7", "fc8"):
        with pytest.raises(UntrainedTapError, match=f"tap {tap} has no trained weights.*full torchvision AlexNet"):
            build_comparator("alexnet", tap, 96)
        with pytest.raises(UntrainedTapError, match="has no trained weights"):
            DeePSiMLoss("alexnet", tap, resolution=227, lambda_adv=0)
    net = build_net("alexnet-tv", 96)
    with pytest.raises(UntrainedTapError):
        net(torch.zeros(1, 3, 96, 96), tap="fc6")  # the network itself, used directly
    with pytest.raises(UntrainedTapError):
        net.features(torch.zeros(1, 3, 96, 96), ["pool5", "fc7"])
    assert net(torch.zeros(1, 3, 96, 96), tap="pool5").shape[1] == 256  # conv taps work as before
    build_comparator("alexnet-random", "fc6", 96)  # random by name: the user asked for random weights


def test_wrong_alexnet_files_are_refused(tmp_path, torchvision_alexnet_file):
    path, reference = torchvision_alexnet_file
    convs_only = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    torch.save(convs_only, tmp_path / "convs.pth")
    with pytest.raises(ValueError, match="expected classifier keys"):
        build_comparator("alexnet", "fc6", 224, weights=str(tmp_path / "convs.pth"))
    with pytest.raises(ValueError, match="fc6 needs pool5 at 6×6"):
        build_comparator("alexnet", "fc6", 96, weights=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch state dict file"):
        build_comparator("alexnet", "fc6", 224, weights=str(tmp_path / "junk.pth"))


def test_paper_preset_without_caffenet_exits_2_with_one_line(capsys):
    assert main(["--preset", "paper-fc6", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "encoder_weights" in err and "train_data" in err


def test_alexnet_fc6_with_a_bad_file_is_refused_before_any_run(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    argv = ["--preset", "paper-fc6", "--launcher", "local", "--run-dir", str(tmp_path / "run"),
            "--set", "encoder=alexnet", "--set", "comparator=alexnet", "--set", "resolution=224",
            "--set", f"encoder_weights={tmp_path / 'junk.pth'}", "--set", "train_data=imagenet-1k-256"]
    assert main(argv) == 2
    assert "junk.pth" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
