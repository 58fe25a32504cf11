"""PNG and JPEG figures under FOLDER re-encoded as WebP, references follow (`python -m repro.compress_figures`).

Figures are written as WebP (`repro.grids.WEBP_QUALITY`), as JPEG before that and PNG before issue 24; this converts
what was written before: every `*.png`, `*.jpg` and `*.jpeg` under FOLDER becomes a `.webp` beside it (the original
is removed), and each reference to it in FOLDER's Markdown (a link, or a code span that is the path alone) and JSON
(a string naming the file) now names the WebP. Commands recorded in provenance are left as they ran: they write the
file the WebP was made from, whose sha256 and size `FOLDER/figures-compressed.json` keeps beside the command and
commit of the conversion. A JPEG that an earlier conversion made from a PNG (a `figures-compressed.json` in FOLDER
or below) keeps that PNG's sha256 in its entry too, so the file a command wrote stays identified; the earlier
records themselves are history and are left as they are. `repro.reporting.publish` runs this on what it copies, so a
run trained before the change is published lean too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from repro.assets import REPO_ROOT
from repro.provenance import git_commit, sha256_file

RECORD = "figures-compressed.json"
CONVERTED = (".png", ".jpg", ".jpeg")  # the formats figures were written in before WebP
_SUFFIX = r"\.(?:png|jpe?g)"
# a path in Markdown: a link's target or a whole code span (a command in backticks is left as it ran)
MARKDOWN_PATH = re.compile(rf"(?<=\]\()[^()\s]+{_SUFFIX}(?=\))|(?<=`)[^`\s]+{_SUFFIX}(?=`)")
JSON_STRING = re.compile(rf'"([^"\\]+{_SUFFIX})"')  # a JSON string that is a path, not a command naming one


def compress_figures(folder: Path, command: str) -> dict:
    """Convert every PNG and JPEG under `folder` (see the module docstring); returns the conversion's record,
    also written (merged with an earlier one) to `folder/figures-compressed.json`. Nothing to convert: nothing
    is written. Raises ValueError, before converting anything, where a figure's WebP would overwrite a file."""
    from PIL import Image

    # local: repro.grids loads torch, which publishing a run folder does not need otherwise
    from repro.grids import FIGURE_SUFFIX, WEBP_METHOD, WEBP_QUALITY, save_figure

    folder = folder.resolve()
    originals = sorted(p for p in folder.rglob("*") if p.suffix in CONVERTED and p.is_file())
    targets: dict[Path, Path] = {}
    for original in originals:
        webp = original.with_suffix(FIGURE_SUFFIX)
        if webp.exists() or webp in targets.values():
            raise ValueError(f"{original} would become {webp}, which already exists or another figure becomes: "
                             f"remove the files that are not the figure, then run again")
        targets[original] = webp
    earliest = earlier_originals(folder)
    files = []
    for original, webp in targets.items():
        entry = {"webp": webp.relative_to(folder).as_posix(), "from": original.name,
                 "sha256": sha256_file(original), "bytes": original.stat().st_size}
        entry.update(earliest.get(original, {}))
        with Image.open(original) as image:
            save_figure(image, webp)
        entry["webp_bytes"] = webp.stat().st_size
        original.unlink()
        files.append(entry)
    if not files:
        return {}
    for text_file in sorted(folder.rglob("*.md")) + sorted(folder.rglob("*.json")):
        if text_file.name != RECORD:
            rewrite_references(text_file, targets)
    record_path = folder / RECORD
    earlier = json.loads(record_path.read_text()) if record_path.exists() else {"conversions": []}
    for conversion in earlier["conversions"]:  # records before WebP: PNG → JPEG, their quality kept at the top
        conversion.setdefault("format", "JPEG")
        conversion.setdefault("quality", earlier.get("quality"))
    conversion = {"command": command, "commit": git_commit(), "format": "WebP", "quality": WEBP_QUALITY,
                  "method": WEBP_METHOD, "files": files}
    record = {"what": "figures re-encoded to keep the repository small; each entry's sha256 (and png_sha256, where "
                      "a PNG became the JPEG that became the WebP) identifies the file the recorded commands wrote",
              "conversions": earlier["conversions"] + [conversion]}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def earlier_originals(folder: Path) -> dict[Path, dict]:
    """JPEGs that earlier conversions (a figures-compressed.json in `folder` or below) made from PNGs: the JPEG's
    path → the PNG's sha256 and bytes."""
    found = {}
    for record_path in folder.rglob(RECORD):
        for conversion in json.loads(record_path.read_text())["conversions"]:
            for entry in conversion["files"]:
                if "jpeg" in entry:
                    found[(record_path.parent / entry["jpeg"]).resolve()] = {
                        "png_sha256": entry["png_sha256"], "png_bytes": entry["png_bytes"]}
    return found


def rewrite_references(text_file: Path, converted: dict[Path, Path]) -> int:
    """Point each path in `text_file` that names a converted figure (relative to the file, or to the repository
    when it starts at `results/`) at its WebP; returns how many were rewritten."""
    def target(path: str) -> str | None:
        for base in (text_file.parent, REPO_ROOT):
            new = converted.get((base / path).resolve())
            if new is not None:
                return path[: -len(Path(path).suffix)] + new.suffix
        return None

    pattern, group = (JSON_STRING, 1) if text_file.suffix == ".json" else (MARKDOWN_PATH, 0)
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        new = target(match.group(group))
        if new is None:
            return match.group(0)
        count += 1
        return match.group(0).replace(match.group(group), new)

    text = text_file.read_text()
    new_text = pattern.sub(replace, text)
    if count:
        text_file.write_text(new_text)
    return count
