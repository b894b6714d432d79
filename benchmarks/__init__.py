"""Benchmarks: each measures a part of the pipeline against the bare library it wraps, in one run.

Run from the repository root as modules (`python -m benchmarks.train_step --help`); `make bench` runs
the ones README shows and assembles results/bench.md. docs/performance.md reads the numbers.
"""
