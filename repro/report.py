"""`python -m repro.report`: render `results/README.md` from what is committed under `results/`.

Nothing is measured: `repro.reporting.report` arranges the committed records, each number linked to its file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.reporting.report import RESULTS, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "README.md")
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
