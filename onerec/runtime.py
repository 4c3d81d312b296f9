"""Process settings for training and benchmarks on a CPU, applied by re-executing.

glibc reads its malloc tunables and OpenMP its wait policy only at start-up, so the `onerec`
command and every benchmark re-execute themselves once with them set (unless they already
are, or ONEREC_NO_TUNING=1); child processes (kfp.local steps, servers) inherit them:
- large per-step allocations (full-softmax logits, beam tensors) otherwise spend much of their
  time in page faults: a peer measured a SASRec step 3.4x faster with these thresholds;
- OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads that lose their core stall every parallel
  region on a shared machine (measured 6x slower steps, docs/baselines.md).
"""

from __future__ import annotations

import os
import sys

TUNED_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
    "MALLOC_TOP_PAD_": str(1 << 30),
    "OMP_WAIT_POLICY": "PASSIVE",
}


def reexec_with_tuned_env(module: str, argv: list[str] | None) -> None:
    """Re-run `python -m module argv` with TUNED_ENV unless it is already in effect."""
    if os.environ.get("ONEREC_NO_TUNING") == "1":
        return
    if all(os.environ.get(k) == v for k, v in TUNED_ENV.items()):
        return
    args = argv if argv is not None else sys.argv[1:]
    os.execve(sys.executable, [sys.executable, "-m", module, *args],  # nosec B606 # ourselves
              {**os.environ, **TUNED_ENV})
