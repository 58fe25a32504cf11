"""The data stage as a package; this commit only moves the files, the next splits `sources` into modules."""
from repro.data.sources import *  # noqa: F401,F403
