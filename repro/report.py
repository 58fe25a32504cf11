"""`python -m repro.report`: render `results/README.md` from what is committed under `results/`.

Nothing is measured: `repro.reporting.report` arranges the committed records, each number linked to its file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.errors import UsageError, cli, user_input
from repro.reporting.report import RESULTS, render


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "README.md")
    args = parser.parse_args(argv)
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    text = render()
    with user_input(OSError):  # --out not writable
        args.out.write_text(text)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
