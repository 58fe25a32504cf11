"""deepsim: DeePSiM (Dosovitskiy & Brox, NIPS 2016) reproduced in PyTorch.

Data flow: images (`data`) → comparator features (`comparators`, `nets.caffenet`) → generator
(`nets.generator`) → losses (`losses`) → the one loop (`loop`) → measurements (`evaluation`) → verdicts and
pages (`reporting`). The commands (`python -m repro.train`, `.evaluate`, `.report`, …) are modules at the top.

Library use: `from repro import Balance, DeePSiMLoss` (see DeePSiMLoss's docstring for a loop of your own).
"""
from __future__ import annotations

__all__ = ["Balance", "DeePSiMLoss"]


def __getattr__(name: str):
    # lazy, so that `import repro.config` stays free of torch
    if name == "DeePSiMLoss":
        from repro.losses import DeePSiMLoss

        return DeePSiMLoss
    if name == "Balance":
        from repro.balance import Balance

        return Balance
    raise AttributeError(f"module 'repro' has no attribute {name!r}")
