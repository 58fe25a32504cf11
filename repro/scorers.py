"""Scorers: anything that maps a batch of images to one number per image, for `repro.code_search`.

A scorer takes images (B, 3, H, W) pipeline RGB in [0, 1] and gives B scores (higher = preferred). Three kinds,
named on the command line by one string (`scorer_from_spec`):

    squeezenet:945                  unit 945 of a network the project builds (`repro.comparators` registry name),
    squeezenet:pool_final:945       at its default tap (squeezenet pool_final, caffenet fc8) or the tap given;
    caffenet:fc8:945 + weights      caffenet/onnx take the user's weights file (`weights=`), as `build_net` does.
                                    A conv tap's unit is read at the map's centre (as `repro.synthesize`).
    mypackage.mymodule:function     a Python callable: function(images) → B numbers (tensor, array or list).
    files:DIR                       a file exchange with another process (closed loop, e.g. a recording rig):
                                    see `FileExchangeScorer`.

Every scorer's output is checked the same way (`checked_scores`): exactly B finite numbers, else a `ScorerError`
whose message is one line naming the scorer and what was wrong. Network units (and Python callables written in
torch) keep the autograd graph, so the gradient optimiser can use them; the file exchange gives no gradient.
"""
from __future__ import annotations

import importlib
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repro.comparators import NETS, build_net

DEFAULT_TAPS = {"squeezenet": "pool_final", "caffenet": "fc8", "caffenet-random": "fc8", "alexnet-random": "fc8"}


class Objective(nn.Module):
    """Image (B, 3, R, R) pipeline RGB → the classifier's tap, resized to the classifier's input side."""

    def __init__(self, net: nn.Module, tap: str, resolution: int | None):
        super().__init__()
        if tap not in net.taps:
            raise ValueError(f"unknown tap {tap!r} for this classifier; choose from {', '.join(net.taps)}")
        self.net, self.tap, self.resolution = net.eval(), tap, resolution
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.resolution and images.shape[-1] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self.net(self.net.transform(images), tap=self.tap)


def unit_activations(outputs: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """a_k per row: outputs (B, C) or (B, C, H, W) (then the unit at the centre, as act_max.py's xy for conv layers)."""
    if outputs.dim() == 4:
        outputs = outputs[:, :, outputs.shape[2] // 2, outputs.shape[3] // 2]
    return outputs.flatten(1).gather(1, units.view(-1, 1)).squeeze(1)


class ScorerError(ValueError):
    """A scorer that cannot be built, or that answered wrongly (count, NaN, ids, timeout); one line."""


def checked_scores(scores: object, count: int, name: str) -> torch.Tensor:
    """`scores` as a float tensor of shape (count,), keeping a tensor's graph; a `ScorerError` otherwise."""
    if not isinstance(scores, torch.Tensor):
        try:
            scores = torch.as_tensor(scores, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ScorerError(f"scorer {name} returned {type(scores).__name__}, not {count} numbers ({err})") from None
    if not scores.is_floating_point():
        scores = scores.double()
    if scores.dim() == 2 and scores.shape[1] == 1:  # a column of scores is still one score per image
        scores = scores[:, 0]
    if tuple(scores.shape) != (count,):
        raise ScorerError(f"scorer {name} returned scores of shape {tuple(scores.shape)} for {count} images; "
                          f"it must give exactly one score per image")
    bad = (~torch.isfinite(scores.detach())).nonzero().flatten().tolist()
    if bad:
        raise ScorerError(f"scorer {name} returned {len(bad)} non-finite score(s) (NaN or inf) for image(s) "
                          f"{', '.join(map(str, bad[:5]))}{' …' if len(bad) > 5 else ''}")
    return scores


class Scorer:
    """images (B, 3, H, W) RGB [0, 1] → (B,) scores. `ids` name the images and `batch` the call (the file
    exchange writes them; the others ignore them)."""

    name = "scorer"

    def score(self, images: torch.Tensor, ids: list[str], batch: str) -> object:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, ids: Sequence[str] | None = None, batch: str = "batch") -> torch.Tensor:
        ids = list(ids) if ids is not None else [f"{i:06d}" for i in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        return checked_scores(self.score(images, ids, batch), len(images), self.name)


class UnitScorer(Scorer):
    """Unit `unit` of `net` at `tap`: images are resized to the net's input side and go through its own
    transform (`net.transform`); a (B, C, H, W) tap is read at the map's centre. Differentiable."""

    def __init__(self, net: nn.Module, tap: str, unit: int, resolution: int | None = None, name: str = "net"):
        self.objective = Objective(net, tap, resolution)
        self.unit, self.name = unit, name

    def score(self, images: torch.Tensor, ids: list[str], batch: str) -> torch.Tensor:
        outputs = self.objective(images)
        return unit_activations(outputs, torch.full((len(images),), self.unit, device=outputs.device))

    def check_unit(self, resolution: int, device: str | torch.device = "cpu") -> None:
        """Refuses a unit the tap does not have (a zero image of side `resolution` tells the tap's width)."""
        with torch.no_grad():
            channels = self.objective(torch.zeros(1, 3, resolution, resolution, device=device)).shape[1]
        if not 0 <= self.unit < channels:
            raise ScorerError(f"unit {self.unit} out of range: {self.name} has {channels} units (0–{channels - 1})")


class PythonScorer(Scorer):
    """A Python callable `function(images) → B numbers`, named `module:function` (the module importable)."""

    def __init__(self, function: Callable[[torch.Tensor], object], name: str):
        self.function, self.name = function, name

    def score(self, images: torch.Tensor, ids: list[str], batch: str) -> object:
        return self.function(images)


class FileExchangeScorer(Scorer):
    """Closed loop through a folder: we write the images, another process writes their scores.

    For each call (one generation, named by `batch`, e.g. `gen0003`):
        DIR/gen0003/<id>.png     the images (8-bit PNG, the generator's resolution), and
        DIR/gen0003/ids.txt      their ids, one a line, in order; the folder appears complete (written as
                                 DIR/gen0003.tmp, then renamed), so a watcher may start as soon as it exists.
    The scorer process then writes
        DIR/gen0003/scores.csv   one line `id,score` per image (a header line `id,score` is allowed), any order;
                                 write it under another name and rename it, so that it is never read half-written.
    We poll for it (every `poll_s`) for at most `timeout_s` seconds. Missing, extra, repeated or unreadable ids,
    and scores that are not finite numbers, are errors naming the ids and the file. A folder left from an earlier
    attempt at the same batch (a resumed run) is moved aside to DIR/gen0003.old-N, never deleted.
    """

    def __init__(self, folder: str | Path, timeout_s: float = 600.0, poll_s: float = 0.1):
        self.folder, self.timeout_s, self.poll_s = Path(folder), float(timeout_s), float(poll_s)
        self.name = f"files:{self.folder}"

    def write_batch(self, images: torch.Tensor, ids: list[str], batch: str) -> Path:
        from torchvision.utils import save_image

        bad = [i for i in ids if not i or any(c in i for c in "/\\,\n") or i.startswith(".")]
        if bad or len(set(ids)) != len(ids):
            raise ValueError(f"image ids must be unique file names without '/', ',' or newlines: {bad[:3] or ids}")
        self.folder.mkdir(parents=True, exist_ok=True)
        final, tmp = self.folder / batch, self.folder / f"{batch}.tmp"
        if final.exists():
            n = 1
            while (self.folder / f"{batch}.old-{n}").exists():
                n += 1
            final.rename(self.folder / f"{batch}.old-{n}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for image, image_id in zip(images.detach().clamp(0, 1).cpu(), ids):
            save_image(image, tmp / f"{image_id}.png")
        (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
        tmp.rename(final)
        return final

    def read_scores(self, path: Path, ids: list[str]) -> list[float]:
        """Scores in the order of `ids` from a `id,score` file; `ScorerError` naming what is wrong."""
        found: dict[str, float] = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or (number == 1 and line.replace(" ", "").lower() == "id,score"):
                continue
            parts = [p.strip() for p in line.split(",")]
            try:
                if len(parts) != 2:
                    raise ValueError
                value = float(parts[1])
            except ValueError:
                raise ScorerError(f"{path} line {number} is not `id,score`: {line[:80]!r}") from None
            if parts[0] in found:
                raise ScorerError(f"{path} scores image {parts[0]!r} twice (line {number})")
            found[parts[0]] = value
        missing = [i for i in ids if i not in found]
        extra = sorted(set(found) - set(ids))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} id(s) missing ({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''})")
            if extra:
                parts.append(f"{len(extra)} id(s) not in this batch ({', '.join(extra[:5])}{' …' if len(extra) > 5 else ''})")
            raise ScorerError(f"{path} does not score exactly the {len(ids)} images of {path.parent / 'ids.txt'}: "
                              + "; ".join(parts))
        nonfinite = [i for i in ids if not math.isfinite(found[i])]
        if nonfinite:
            raise ScorerError(f"{path} gives non-finite scores (NaN or inf) for {', '.join(nonfinite[:5])}")
        return [found[i] for i in ids]

    def score(self, images: torch.Tensor, ids: list[str], batch: str) -> torch.Tensor:
        scores_path = self.write_batch(images, ids, batch) / "scores.csv"
        deadline = time.monotonic() + self.timeout_s
        while not scores_path.exists():
            if time.monotonic() > deadline:
                raise ScorerError(f"no scores file {scores_path} after {self.timeout_s:g} s: the scoring process "
                                  f"must write one `id,score` line per image of {scores_path.parent / 'ids.txt'}")
            time.sleep(self.poll_s)
        return torch.tensor(self.read_scores(scores_path, ids), dtype=torch.float64)


def scorer_from_spec(spec: str, *, weights: str | None = None, resolution: int | None = None,
                     image_side: int | None = None, device: str | torch.device = "cpu",
                     timeout_s: float = 600.0) -> Scorer:
    """The scorer a string names (see the module docstring).

    weights: the network's weights file (caffenet, onnx); resolution: the network's input side (default 227 for
    caffenet, else the images' own side); image_side: the side of the images it will get (checks the unit's
    range up front); timeout_s: the file exchange's wait for each scores file.
    """
    head, _, rest = spec.partition(":")
    if head == "files":
        if not rest:
            raise ScorerError("scorer 'files:' needs a folder: files:DIR")
        return FileExchangeScorer(rest, timeout_s)
    if head in NETS:
        parts = rest.split(":") if rest else []
        if len(parts) not in (1, 2) or not parts[-1].lstrip("-").isdigit():
            raise ScorerError(f"scorer {spec!r}: a network unit is NET:UNIT or NET:TAP:UNIT (e.g. squeezenet:945, "
                              "squeezenet:pool_final:945)")
        tap = parts[0] if len(parts) == 2 else DEFAULT_TAPS.get(head)
        if tap is None:
            raise ScorerError(f"scorer {spec!r}: {head} has no default tap; name one: {head}:TAP:UNIT")
        side = resolution or (227 if head.startswith("caffenet") else None)
        try:
            net = build_net(head, resolution=side or image_side or 227, weights=weights).to(device)
            scorer = UnitScorer(net, tap, int(parts[-1]), side, name=f"{head}:{tap}:{parts[-1]}")
        except (ValueError, FileNotFoundError) as err:
            raise ScorerError(f"scorer {spec!r}: {err}") from None
        if image_side:
            scorer.check_unit(image_side, device)
        return scorer
    module_name, function_name = head, rest
    if not module_name or not function_name or ":" in function_name:
        raise ScorerError(f"unknown scorer {spec!r}: give a network unit NET:UNIT (NET one of {', '.join(NETS)}), "
                          "a Python function module:function, or files:DIR")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ScorerError(f"unknown scorer {spec!r}: {module_name!r} is not a network ({', '.join(NETS)}) and not "
                          f"an importable module ({err})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ScorerError(f"unknown scorer {spec!r}: module {module_name} has no function {function_name!r}")
    return PythonScorer(function, spec)
