"""Throughput benchmarks of the one training loop, run by hand (`make bench`); results under results/perf/."""
