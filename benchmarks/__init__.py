"""Benchmark harness for sparsedsl vs. peers: run `python -m benchmarks --help`."""
