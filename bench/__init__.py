"""Benchmarks: each prints a table and compares against a baseline in the same run.

Never part of `make test`. Results, with date and exact command, go to docs/results.md
(docs/baselines.md for the baseline runs).
"""
