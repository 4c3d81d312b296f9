"""Bit-identical training on a CPU with more than one thread, busy machine or idle.

Why: the backward of advanced indexing with repeated indices (`table[items]` over a batch's
history slots, the decoder gathering each target's request memory) is PyTorch's CPU
`index_put_(accumulate=True)`, which adds rows from several threads with atomic float adds.
Popular items repeat in every batch, so the order of those adds, and the last bits of the
gradient, depend on thread timing: two runs of the demo's pretraining on 2 threads already
differed at step 6, and by the end of a cycle the drift moved the gate's metrics by a few per
cent (docs/results.md, "The demo's models"). PyTorch's deterministic mode sorts the indices
first. The mode also fills every new tensor with NaN (`fill_uninitialized_memory`), which
makes reading uninitialised memory repeatable; no correct kernel reads it, and the fills were
14% of a demo training step's CPU time, so the context turns them off.

`train.deterministic` (default on) turns the mode on for the duration of a training loop
(pretraining, the reward model, ECPO) and restores the caller's setting after it, so serving and
evaluation keep whatever the process chose. `warn_only`: an op with no deterministic kernel (some
CUDA ops) warns instead of failing a long run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import torch
import torch.utils.deterministic

if TYPE_CHECKING:
    from onerec.config import Config

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """Run the body with PyTorch's deterministic algorithms on (off: leave the setting alone)."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    before_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        torch.utils.deterministic.fill_uninitialized_memory = before_fill


def deterministic_training(fn: Callable[Concatenate[Config, P], R]
                           ) -> Callable[Concatenate[Config, P], R]:
    """Decorate a training loop whose first argument is the Config: its body runs under
    `deterministic_kernels(cfg.train.deterministic)`."""
    @functools.wraps(fn)
    def run(cfg: Config, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with deterministic_kernels(cfg.train.deterministic):
            return fn(cfg, *args, **kwargs)
    return run
