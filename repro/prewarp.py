"""`python -m repro.prewarp SRC OUT`, the command the README and results/scale.md name: a thin entry point
kept so that the command (and `from repro.prewarp import prewarp`) works as before; the code lives in
`repro.data.prewarp`."""
from repro.data.prewarp import main, prewarp  # noqa: F401 - prewarp: re-exported for existing imports

if __name__ == "__main__":
    import sys

    sys.exit(main())
