"""The pretrained AlexNet weights are real: pool5 features separate Caltech-101 classes far better than
random weights do (nearest-class-mean on held-out images)."""
from __future__ import annotations

import pytest
import torch

from repro.data import list_images, load_images
from repro.nets.caffenet import AlexNetTV

CLASSES = ("accordion", "airplanes", "dalmatian", "pizza", "sunflower", "watch")
TRAIN, TEST = 12, 12


def nearest_class_mean_accuracy(net, images, labels, n_classes):
    with torch.no_grad():
        feats = net(net.transform(images), tap="pool5").flatten(1)
    feats = torch.nn.functional.normalize(feats, dim=1)
    train = torch.cat([torch.arange(c * (TRAIN + TEST), c * (TRAIN + TEST) + TRAIN) for c in range(n_classes)])
    test = torch.tensor([i for i in range(len(labels)) if i not in set(train.tolist())])
    means = torch.stack([feats[train][labels[train] == c].mean(0) for c in range(n_classes)])
    predicted = (feats[test] @ means.T).argmax(1)
    return (predicted == labels[test]).float().mean().item()


@pytest.mark.slow
def test_pretrained_pool5_beats_random_weights(assets, pretrained_alexnet):
    files, labels = [], []
    for c, name in enumerate(CLASSES):
        found = list_images(assets / "caltech101" / name)[: TRAIN + TEST]
        files += found
        labels += [c] * len(found)
    images = load_images(files, 224)
    labels = torch.tensor(labels)
    torch.manual_seed(0)
    pretrained = nearest_class_mean_accuracy(pretrained_alexnet, images, labels, len(CLASSES))
    random = nearest_class_mean_accuracy(AlexNetTV(224).eval(), images, labels, len(CLASSES))
    print(f"nearest-class-mean accuracy: pretrained {pretrained:.3f}, random {random:.3f}")
    assert pretrained >= 0.85
    assert pretrained - random >= 0.3
