"""`python -m repro.compress_figures FOLDER`: PNG and JPEG figures under FOLDER re-encoded as WebP, references follow.

Each `*.png`, `*.jpg` and `*.jpeg` becomes a `.webp` beside it, FOLDER's Markdown and JSON name the WebP, and
`FOLDER/figures-compressed.json` keeps what each original was (`repro.reporting.compress_figures`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.errors import UsageError, cli, user_input
from repro.provenance import command
from repro.reporting.compress_figures import RECORD, compress_figures


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m repro.compress_figures", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a results folder (e.g. results/)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    with user_input(ValueError):
        record = compress_figures(args.folder, command("repro.compress_figures", argv))
    if not record:
        print(f"no PNG or JPEG under {args.folder}")
        return 0
    conversion = record["conversions"][-1]
    before, after = sum(f["bytes"] for f in conversion["files"]), sum(f["webp_bytes"] for f in conversion["files"])
    print(f"{len(conversion['files'])} PNG/JPEG → WebP (quality {conversion['quality']}): {before / 2**20:.1f} → "
          f"{after / 2**20:.1f} MiB; record {args.folder / RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
