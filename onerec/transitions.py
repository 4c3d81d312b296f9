"""The transition memory: each item's most frequent successors in the training requests.

The generative model trails a plain item-to-item count wherever the next item is a pair other
users already made (docs/results.md, "Where the test gap is"): a semantic-ID decoder shares
its capacity between items and does not memorise pairs the way SASRec's item softmax does. This
table gives the model that memory explicitly, as kNN-LM gives a language model a non-parametric
one. `OneRec.rank_beam` reads it as a Dirichlet-smoothed Markov chain whose prior is the beam's
own distribution, so it only re-orders what generation produced; the table is a buffer of the
model, saved in its checkpoint and exported in its graph.

Counts are per (last item a request's target may see -> target) pair, each target once; a warm
start adds the new requests' pairs to the previous model's table, so continuous training keeps
counting. The table keeps the `k` most frequent successors of each item (ties: the smaller
item index first) and each item's total count over all of its successors, the chain's
denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.stream import Requests


@dataclass
class TransitionTable:
    """next_items (n + 1, k) successor indices (0: empty slot), next_counts (n + 1, k) their
    counts, out_counts (n + 1,) each item's count over all of its successors."""

    next_items: np.ndarray
    next_counts: np.ndarray
    out_counts: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int((self.next_items > 0).sum())


def last_visible(reqs: Requests) -> np.ndarray:
    """(T,) the most recent short-history item each target may see (0: none). `short` is
    left-padded, most recent last; with `target_len` (a causal encoder's windows) target t
    sees the first `target_len[t]` items of its window."""
    req = np.repeat(np.arange(len(reqs)), np.diff(reqs.target_offsets))
    if reqs.target_len is None:
        return reqs.short[req, -1] if len(req) else np.zeros(0, dtype=np.int64)
    s = reqs.short.shape[1]
    n_hist = (reqs.short > 0).sum(1)[req]  # window items, left-padded
    col = s - n_hist + reqs.target_len - 1  # the target's last visible slot
    last = reqs.short[req, np.clip(col, 0, s - 1)]
    return np.where(reqs.target_len > 0, last, 0)


def count_transitions(reqs: Requests, n_items: int, k: int,
                      prior: TransitionTable | None = None) -> TransitionTable:
    """The table of `reqs`' (last item -> target) pairs, plus `prior`'s counts if given."""
    if k <= 0:
        raise ValueError(f"model.transition_neighbors: must be > 0, got {k}")
    size = n_items + 1
    a = last_visible(reqs).astype(np.int64)
    b = reqs.targets.astype(np.int64)
    keep = (a > 0) & (b > 0) & (a < size) & (b < size)
    a, b, w = a[keep], b[keep], np.ones(int(keep.sum()), dtype=np.float64)
    out = np.bincount(a, weights=w, minlength=size)
    if prior is not None:
        if prior.next_items.shape[0] != size:
            raise ValueError(f"transition table: the previous model has "
                             f"{prior.next_items.shape[0] - 1} items, this one {n_items}")
        pa, pj = np.nonzero(prior.next_items > 0)
        a = np.concatenate([a, pa])
        b = np.concatenate([b, prior.next_items[pa, pj].astype(np.int64)])
        w = np.concatenate([w, prior.next_counts[pa, pj].astype(np.float64)])
        out = out + prior.out_counts.astype(np.float64)
    pairs, inv = np.unique(a * size + b, return_inverse=True)
    counts = np.bincount(inv, weights=w, minlength=len(pairs))
    pa, pb = pairs // size, pairs % size
    order = np.lexsort((pb, -counts, pa))  # by item, most frequent successor first
    pa, pb, counts = pa[order], pb[order], counts[order]
    first = np.searchsorted(pa, pa, side="left")
    rank = np.arange(len(pa)) - first
    top = rank < k
    next_items = np.zeros((size, k), dtype=np.int64)
    next_counts = np.zeros((size, k), dtype=np.float32)
    next_items[pa[top], rank[top]] = pb[top]
    next_counts[pa[top], rank[top]] = counts[top]
    return TransitionTable(next_items, next_counts, out.astype(np.float32))
