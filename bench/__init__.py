"""Benchmarks and load tests (not imported by the app or the pipeline)."""
