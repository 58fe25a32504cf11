"""`python -m repro.compress_figures FOLDER`: PNG figures under FOLDER re-encoded as JPEG, references rewritten.

Figures are written as JPEG since issue 24 (`repro.figures.JPEG_QUALITY`); this converts what was written
before: every `*.png` under FOLDER becomes a `.jpg` beside it (the PNG is removed), and each reference to it
in FOLDER's Markdown (a link, or a code span that is the path alone) and JSON (a string naming the file) now names the JPEG.
Commands recorded in provenance are left as they ran: they write the PNG the JPEG was made from, whose sha256
`FOLDER/figures-compressed.json` keeps beside the command and commit of the conversion. `repro.publish`
runs this on what it copies, so a run trained before the change is published lean too.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from repro.provenance import sha256_file

RECORD = "figures-compressed.json"
# a path in Markdown: a link's target or a whole code span (a command in backticks is left as it ran)
MARKDOWN_PATH = re.compile(r"(?<=\]\()[^()\s]+\.png(?=\))|(?<=`)[^`\s]+\.png(?=`)")
JSON_STRING = re.compile(r'"([^"\\]+\.png)"')  # a JSON string that is a path, not a command naming one


def compress_figures(folder: Path, command: str) -> dict:
    """Convert every PNG under `folder` (see the module docstring); returns the conversion's record, also
    written (merged with an earlier one) to `folder/figures-compressed.json`. No PNG: nothing is written."""
    from PIL import Image

    from repro.figures import JPEG_QUALITY, save_figure
    from repro.provenance import git_commit

    folder = folder.resolve()
    converted: dict[Path, Path] = {}
    files = []
    for png in sorted(folder.rglob("*.png")):
        jpeg = png.with_suffix(".jpg")
        entry = {"jpeg": jpeg.relative_to(folder).as_posix(), "png_sha256": sha256_file(png),
                 "png_bytes": png.stat().st_size}
        with Image.open(png) as image:
            save_figure(image, jpeg)
        entry["jpeg_bytes"] = jpeg.stat().st_size
        png.unlink()
        converted[png] = jpeg
        files.append(entry)
    if not files:
        return {}
    for text_file in sorted(folder.rglob("*.md")) + sorted(folder.rglob("*.json")):
        rewrite_references(text_file, converted)
    record_path = folder / RECORD
    earlier = json.loads(record_path.read_text()) if record_path.exists() else {"conversions": []}
    record = {"what": "PNG figures re-encoded as JPEG; png_sha256 identifies the file the recorded commands wrote",
              "quality": JPEG_QUALITY,
              "conversions": earlier["conversions"] + [{"command": command, "commit": git_commit(), "files": files}]}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def rewrite_references(text_file: Path, converted: dict[Path, Path]) -> int:
    """Point each path in `text_file` that names a converted PNG (relative to the file, or to the repository
    when it starts at `results/`) at its JPEG; returns how many were rewritten."""
    from repro.assets import REPO_ROOT

    def target(path: str) -> str | None:
        for base in (text_file.parent, REPO_ROOT):
            if (base / path).resolve() in converted:
                return path[: -len(".png")] + ".jpg"
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    from repro.provenance import command

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m repro.compress_figures", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a results folder (e.g. results/)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    record = compress_figures(args.folder, command("repro.compress_figures", argv))
    if not record:
        print(f"no PNG under {args.folder}")
        return 0
    files = record["conversions"][-1]["files"]
    before, after = sum(f["png_bytes"] for f in files), sum(f["jpeg_bytes"] for f in files)
    print(f"{len(files)} PNG → JPEG (quality {record['quality']}): {before / 2**20:.1f} → {after / 2**20:.1f} MiB; "
          f"record {args.folder / RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
