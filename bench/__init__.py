"""Benchmarks that print tables (quality, speed); never part of `make test`."""
