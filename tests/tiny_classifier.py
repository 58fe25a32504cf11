"""A small fixed classifier for the synthesis tests (test_synthesize, test_code_search)."""
from __future__ import annotations

import torch


class Scores(torch.nn.Module):
    """A small fixed classifier without dead units (tanh, no ReLU), so that every unit has a gradient from the
    start; the real networks are exercised by the command-line tests."""

    taps = ("scores",)

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=4), torch.nn.Tanh(),
                                            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 20))
        self.transform = torch.nn.Identity()

    def forward(self, x, tap):
        return self.body(x)
