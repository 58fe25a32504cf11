"""A trained generator as one small file: what it inverts, how to build it, its weights and their sha256.

    from repro.generator_file import load_generator
    g = load_generator("pool5-96px.generator.pt")        # GeneratorFile: .generator (eval mode), .encoder, .tap
    images = g.generator(code)                           # code (B, *g.in_shape) → (B, 3, R, R) RGB ≈[0, 1]
    inverter = Inverter.from_file(g)                     # repro.models: + the encoder the file names

Why a file of its own: a run's checkpoint holds G, D, both optimisers and RNG states (tens of MB) and
`repro.runs.load_run` rebuilds encoder, comparator and D and reseeds the global RNG. Inverting features or
synthesising images needs only G. The file is a `torch.save`d dict of plain data (read back with
`weights_only=True`, so no code is unpickled):

    format         "deepsim-generator/1"
    generator      the `Generator` constructor arguments (in_shape, resolution, width, leaky_slope, …)
    encoder, tap   the registry name and layer of the network whose features it inverts
                   (`repro.comparators`), with the sha256 of the encoder's weights file when it had one
    config         the training config (a dict, or {} for converted weights), for provenance
    source         where the weights came from (a run folder and step, or converted Caffe files)
    state_dict     the generator's tensors, float16 or float32 as written
    sha256         of the state dict's names, dtypes, shapes and bytes; checked on every load

A run's generator becomes a file with `repro.runs.export_run` (`python -m repro.publish RUN --generator`); the
file that ships with the package (`SHIPPED`, made by `python -m repro.shipped`) is what Config.init_generator
"shipped" names.

Loading builds the generator on the meta device and assigns the stored tensors (`load_state_dict(...,
assign=True, strict=True)`): no random initialisation runs, so the caller's global RNG is untouched, and
every tensor must be present with its shape.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.errors import DeepsimError
from repro.nets.generator import Generator

FORMAT = "deepsim-generator/1"
SUFFIX = ".generator.pt"
# The generator that ships with the package (made by `python -m repro.shipped`, Config.init_generator="shipped")
SHIPPED_FOLDER = Path(__file__).resolve().parent / "generators"
SHIPPED_NAME = "conv5star-96px"
SHIPPED = SHIPPED_FOLDER / f"{SHIPPED_NAME}{SUFFIX}"


class GeneratorFileError(DeepsimError, ValueError):
    """A file that is not a usable generator file (unreadable, another format, corrupt)."""


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order (independent of pickling)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)  # flat: a (1, 3, 1, 1) channels_last buffer
        # counts as contiguous yet has stride 3 in its last dimension, which a byte view refuses
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")  # 0-d too
    return digest.hexdigest()


def generator_args(generator: Generator) -> dict[str, Any]:
    """The constructor arguments that rebuild `generator`'s architecture."""
    slopes = {m.negative_slope for m in generator.modules() if isinstance(m, nn.LeakyReLU)}
    if len(slopes) != 1:
        raise ValueError(f"generator has LeakyReLU slopes {sorted(slopes)}; expected one")
    return {"in_shape": list(generator.in_shape), "resolution": generator.resolution, "width": generator.width,
            "leaky_slope": float(slopes.pop()),
            "learn_upconv_bias": any(name.startswith("upconv.") and name.endswith(".bias")
                                     for name, _ in generator.named_parameters()),
            "output_space": generator.output_space}


def save_generator(path: str | Path, generator: Generator, *, encoder: str, tap: str,
                   encoder_weights_sha256: str = "", config: dict[str, Any] | None = None,
                   source: dict[str, Any] | None = None, half: bool = False) -> dict[str, Any]:
    """Write `generator` as a generator file (atomically); returns the record written (without tensors).

    half: store float16 (half the size; reconstructions differ by ~1e-3 of the image range).
    """
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)  # a channels_last run's too
             for k, v in generator.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    record = {"format": FORMAT, "generator": generator_args(generator), "encoder": encoder, "tap": tap,
              "encoder_weights_sha256": encoder_weights_sha256, "config": dict(config or {}),
              "source": dict(source or {}), "sha256": state_sha256(state)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**record, "state_dict": state}, tmp)
    tmp.replace(path)
    return record


@dataclass
class GeneratorFile:
    """A loaded generator file: the generator (eval mode, float32) and what the file says about it."""

    path: Path
    generator: Generator
    encoder: str
    tap: str
    encoder_weights_sha256: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.generator.in_shape

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def encoder_input_size(self) -> int | None:
        """The side the encoder saw in training when it differs from R (protocol CONV5*: 227), from the config."""
        side = int(self.config.get("encoder_resolution", 0) or 0)
        return side if side and side != self.resolution else None


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> GeneratorFile:
    """Read a generator file (see the module docstring); `GeneratorFileError` says why one is unusable."""
    path = Path(path)
    if not path.is_file():
        raise GeneratorFileError(f"generator file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of every kind: not a torch file
        raise GeneratorFileError(f"{path} is not a generator file (torch.load cannot read it: "
                                 f"{type(err).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        hint = " (a run checkpoint? export it with `python -m repro.publish RUN_DIR --generator`)" \
            if isinstance(data, dict) and "model" in data else ""
        raise GeneratorFileError(f"{path} is not a generator file (format {found!r}, expected {FORMAT!r}){hint}")
    state = data["state_dict"]
    if state_sha256(state) != data.get("sha256"):
        raise GeneratorFileError(f"{path} is corrupt: its weights do not match the sha256 it records")
    args = dict(data["generator"])
    args["in_shape"] = tuple(args["in_shape"])
    with torch.device("meta"):  # no initialisation runs: the global RNG stays as the caller left it
        generator = Generator(**args)
    try:
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                  strict=True, assign=True)
    except RuntimeError as err:
        raise GeneratorFileError(f"{path}: the weights do not fit the generator it describes: "
                                 f"{str(err).splitlines()[0]}") from None
    generator.to(device).eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    return GeneratorFile(path, generator, data["encoder"], data["tap"], data.get("encoder_weights_sha256", ""),
                         data.get("config", {}), data.get("source", {}), data["sha256"])


def shipped_generator() -> Path:
    """The shipped generator file; a clear error when the package was installed without it."""
    if not SHIPPED.is_file():
        raise GeneratorFileError(f"the shipped generator {SHIPPED} is missing (a package installed without its data?): "
                                 "give --generator FILE (make one with python -m repro.publish RUN --generator --half)")
    return SHIPPED


def init_generator_path(value: str) -> Path:
    """Config.init_generator as a file: "shipped" names the generator that ships with the package."""
    return shipped_generator() if value == "shipped" else Path(value)


def warm_start(generator: Generator, path: str | Path, *, encoder: str, tap: str,
               encoder_input_size: int | None) -> GeneratorFile:
    """Copy a generator file's weights into `generator` (Config.init_generator): G starts from, e.g., the image-loss
    solution, our schedule option. The file must invert the same code (encoder, tap, the side the encoder sees)
    with the same architecture; `GeneratorFileError` names every difference."""
    source = load_generator(path)
    want = {"encoder": encoder, "tap": tap, "encoder input size": encoder_input_size, **generator_args(generator)}
    have = {"encoder": source.encoder, "tap": source.tap, "encoder input size": source.encoder_input_size,
            **generator_args(source.generator)}
    differ = [f"{key} {have[key]} (this run: {want[key]})" for key in want if have[key] != want[key]]
    if differ:
        raise GeneratorFileError(f"init_generator {path} does not fit this run's generator: {'; '.join(differ)}")
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            tensor.copy_(source.generator.state_dict()[name])
    return source
