"""Benchmarks re-execute with the tuned process settings of `onerec.runtime` (one definition)."""

from onerec.runtime import TUNED_ENV, reexec_with_tuned_env

__all__ = ["TUNED_ENV", "reexec_with_tuned_env"]
