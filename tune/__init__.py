"""Searches over the loss weights λ with Ray Tune.

`tune.spaces`: the λ search space of each preset family, on log scales around the paper's values.
`tune.search`: `python -m tune.search` wraps the one training loop (`repro.loop.train`) in Ray Tune; it
never runs a loop of its own.
"""
