"""Searches over the loss weights λ with Ray Tune.

`tune.spaces`: the λ search space of each preset family, on log scales around the paper's values.
`tune.search`: `python -m tune.search`, the CLI. It wraps the one training loop (`repro.loop.train`) in Ray
Tune and never runs a loop of its own: `tune.options` (what a search is asked for), `tune.target` (the
objective), `tune.scoring` (a trial's model scored in memory at each checkpoint), `tune.trial` (one trial),
`tune.tuner` (scheduler, searcher, Tuner), `tune.export` (tables and best.json).
"""
