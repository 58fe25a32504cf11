"""The target of a λ search and its objective: the distance of a trial's normalised errors to the paper's."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tune.options import SearchError

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE = REPO_ROOT / "results" / "paper_table2.json"
PAPER_ROW = "AlexNet CONV5"
# Table 2, row "AlexNet CONV5" (image / feature error in %), used when results/paper_table2.json is absent.
BUILTIN_TABLE2 = {"pool5": (43, 37), "fc6": (55, 48), "fc7": (61, 45), "fc8": (63, 29)}
LAYER_ALIASES = {"conv5": "pool5"}  # the paper calls pool5 "CONV5"


@dataclass(frozen=True)
class Target:
    """Where the trial's normalised errors should land, as fractions (0.55 = 55 %); None = not scored."""

    image: float | None
    feature: float | None
    label: str

    def distance(self, image_error: float, feature_error: float) -> float:
        """Euclidean distance of (image_error, feature_error) (fractions) to the target's given parts."""
        parts = [(a - b) ** 2 for a, b in ((image_error, self.image), (feature_error, self.feature))
                 if b is not None]
        return math.sqrt(sum(parts))


def paper_targets() -> tuple[dict[str, tuple[float | None, float | None]], str]:
    """{tap: (image, feature)} as fractions from Table 2's "AlexNet CONV5" row, and where they came from."""
    if PAPER_TABLE.exists():
        table = json.loads(PAPER_TABLE.read_text())
        row = next((r for r in table["rows"] if r["name"] == PAPER_ROW), None)
        if row is None:
            raise SearchError(f"{PAPER_TABLE} has no row {PAPER_ROW!r}; restore the file or give --target image=…,feature=…")
        out = {}
        for column, tap in table["column_taps"].items():
            cell = row["cells"].get(column)
            if cell is not None:
                out[tap] = tuple(None if cell[k] is None else cell[k] / 100 for k in ("image", "feature"))
        return out, str(PAPER_TABLE.relative_to(REPO_ROOT))
    return {tap: (i / 100, f / 100) for tap, (i, f) in BUILTIN_TABLE2.items()}, "built-in copy of Table 2"


def parse_target(text: str, layer: str) -> Target:
    """`paper` (the preset's layer), `paper:fc6` (pool5/conv5/fc6/fc7/fc8) or `image=0.55,feature=0.48`."""
    text = text.strip()
    if text == "paper" or text.startswith("paper:"):
        tap = text.partition(":")[2].lower() or layer
        tap = LAYER_ALIASES.get(tap, tap)
        table, source = paper_targets()
        if tap not in table:
            raise SearchError(f"Table 2 has no {PAPER_ROW!r} cell for layer {tap!r}; choose from "
                              f"{', '.join('paper:' + t for t in table)} or give --target image=…,feature=…")
        image, feature = table[tap]
        return Target(image, feature, f"paper:{tap} ({PAPER_ROW} row of Table 2, {source})")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or key not in ("image", "feature"):
            raise SearchError(f"--target {text!r}: expected paper, paper:LAYER or image=F,feature=F")
        try:
            values[key] = float(raw)
        except ValueError as err:
            raise SearchError(f"--target {text!r}: {raw!r} is not a number") from err
        if not 0 <= values[key] <= 1.5:
            raise SearchError(f"--target {key}={raw}: give errors as fractions (0.55 for 55 %)")
    return Target(values.get("image"), values.get("feature"), text)

