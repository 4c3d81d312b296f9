"""RQ-Kmeans: residual quantisation with k-means codebooks, coarse to fine (OneRec §2.1).

Level 1 clusters the item embeddings into K codes; level l clusters the residuals left after
subtracting the centroids chosen at levels 1..l-1. An item's code tuple (c1, ..., cL) is its
semantic ID, and the sum of its centroids is its reconstruction.

Design choices:
- k-means is faiss-cpu (`faiss.Kmeans`): seconds for 10^4 items on 2 cores. Each level is seeded
  with `seed + level`. It trains on at most `max_points_per_centroid` x K items (faiss's own
  sampling, seeded: 256 x K by default, so every item of a catalogue under 65k items at
  K = 256 trains, and 10 M items at K = 1024 train on 262k), and the same inputs and seed give
  byte-identical centroids and codes.
- Memory is bounded, not N x K: distances are computed in blocks of `BLOCK` rows, and the
  balanced assignment keeps each item's `CANDIDATES` nearest codes where N x K would pass
  `FULL_LIMIT` entries (a catalogue of 10 M items at K = 1024 would need 40 GB of distances);
  the items every candidate refuses go on among the codes that still have room. Under the
  limit the assignment is the exact greedy one, as before.
- Balanced option (OneRec uses balanced k-means so that codes are used evenly, which the
  beam search and the softmax over codes both like): after faiss k-means, `balance_iters` rounds
  of (assignment under a capacity, centroid = mean of its members). The capacity of a code is
  ceil(N/K) * slack. The assignment is greedy by distance, vectorised as proposal rounds: every
  unassigned item proposes to its nearest code that it has not been refused by, and each code
  keeps the closest proposals up to its remaining capacity. Total capacity >= N, so it ends.
- Encoding items after the fit (refresh) is plain nearest-centroid per level: no capacity, so
  existing items never move.
- Bad inputs fail before faiss sees them, with the problem named: empty catalogue, NaN/inf
  values, K larger than the number of items.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


class TokenizerError(ValueError):
    """Inputs to the tokenizer are unusable (empty, non-finite, too few items for K, ...)."""


def check_embeddings(x: np.ndarray, codebook_size: int | None = None) -> np.ndarray:
    """Return `x` as C-contiguous float32 (N, d), or raise TokenizerError naming the problem."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise TokenizerError(f"embeddings must be a 2-D array (items, dim), got shape {x.shape}")
    if x.shape[0] == 0:
        raise TokenizerError("empty catalogue: no items to tokenize (embeddings have 0 rows)")
    if x.shape[1] == 0:
        raise TokenizerError("embeddings have dimension 0")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise TokenizerError(f"embeddings contain {int(bad.sum())} NaN/inf value(s) in "
                             f"{len(rows)} item row(s), first rows {rows[:5].tolist()}")
    if codebook_size is not None and codebook_size > x.shape[0]:
        raise TokenizerError(f"tokenizer.codebook_size={codebook_size} is larger than the number "
                             f"of items ({x.shape[0]}); lower it or add items")
    return np.ascontiguousarray(x, dtype=np.float32)


BLOCK = 65_536  # rows of x per distance block
FULL_LIMIT = 1 << 26  # N x K distances kept whole up to this (256 MB of float32)
CANDIDATES = 8  # nearest codes kept per item above it (8: a third of 32's time at 1M x 1024)
MAX_POINTS_PER_CENTROID = 256  # k-means trains on at most this x K items (faiss's default)


def sq_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared L2 distances (N, K) between rows of x (N, d) and centroids c (K, d)."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each row (ties: lowest index), BLOCK rows at a time."""
    out = np.empty(x.shape[0], dtype=np.int32)
    for s in range(0, x.shape[0], BLOCK):
        out[s:s + BLOCK] = sq_distances(x[s:s + BLOCK], c).argmin(1)
    return out


def nearest_codes(x: np.ndarray, c: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's m nearest centroids, nearest first, and their squared distances: (N, m)
    int32 and float32. All K (m = K): an exact stable sort of each row's distances (ties:
    lowest index), BLOCK rows at a time; fewer: faiss's exact k-nearest search (a flat L2
    index), which keeps m per row instead of sorting K."""
    n, k = x.shape[0], c.shape[0]
    if m < k:
        import faiss  # heavy import, only where k-means runs

        index = faiss.IndexFlatL2(c.shape[1])
        index.add(np.ascontiguousarray(c, dtype=np.float32))
        dist, order = index.search(np.ascontiguousarray(x, dtype=np.float32), m)
        return order.astype(np.int32), np.maximum(dist, 0.0).astype(np.float32)
    order = np.empty((n, m), dtype=np.int32)
    dist = np.empty((n, m), dtype=np.float32)
    for s in range(0, n, BLOCK):
        d = sq_distances(x[s:s + BLOCK], c)
        o = np.argsort(d, axis=1, kind="stable")
        order[s:s + BLOCK] = o
        dist[s:s + BLOCK] = np.take_along_axis(d, o, 1)
    return order, dist


def balanced_assign(x: np.ndarray, c: np.ndarray, capacity: int,
                    candidates: int | None = None) -> np.ndarray:
    """Greedy-by-distance assignment with at most `capacity` items per centroid.

    x: (N, d), c: (K, d); requires capacity * K >= N. Returns labels (N,) int32. Rounds of
    proposals: every unassigned item proposes to its nearest code that has not refused it, and
    each code keeps the closest proposals up to its remaining capacity. Each item's proposals
    run down its `candidates` nearest codes (all K where N x K <= FULL_LIMIT: the exact
    greedy; else CANDIDATES). A refusal means the code is full, so the items that all their
    candidates refused go on among the codes that still have room, and so on until all are in.
    """
    n, k = x.shape[0], c.shape[0]
    if capacity * k < n:
        raise TokenizerError(f"capacity {capacity} x {k} codes cannot hold {n} items")
    labels = np.full(n, -1, dtype=np.int32)
    remaining = np.full(k, capacity, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        room = np.flatnonzero(remaining > 0)
        m = candidates or (room.size if todo.size * room.size <= FULL_LIMIT else CANDIDATES)
        sub_x = x if todo.size == n else x[todo]
        order, dist = nearest_codes(sub_x, c[room], min(m, room.size))
        sub = np.full(todo.size, -1, dtype=np.int32)
        remaining = _proposal_rounds(np.arange(todo.size), room[order].astype(np.int32), dist,
                                     sub, remaining)
        labels[todo] = sub
        todo = todo[sub < 0]
    return labels


def _proposal_rounds(todo: np.ndarray, order: np.ndarray, dist: np.ndarray,
                     labels: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Proposal rounds over the candidate lists (order, dist: (N, m), nearest first) until
    every item in `todo` is assigned or refused by all its m candidates (its label stays -1).
    A refusal means the code is full, so it never takes another item. Returns the remaining
    capacities."""
    k, m = remaining.size, order.shape[1]
    ptr = np.zeros(order.shape[0], dtype=np.int64)
    while todo.size:
        prop = order[todo, ptr[todo]]
        d = dist[todo, ptr[todo]]
        srt = np.lexsort((todo, d, prop))  # by code, then distance, then item (determinism)
        todo_s, prop_s = todo[srt], prop[srt]
        first = np.searchsorted(prop_s, prop_s, side="left")
        rank = np.arange(prop_s.size) - first
        accept = rank < remaining[prop_s]
        labels[todo_s[accept]] = prop_s[accept]
        remaining = remaining - np.bincount(prop_s[accept], minlength=k)
        rejected = todo_s[~accept]
        ptr[rejected] += 1
        todo = np.sort(rejected[ptr[rejected] < m])
    return remaining


def _kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    import faiss  # heavy import, only where k-means runs

    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False,
                      max_points_per_centroid=MAX_POINTS_PER_CENTROID, min_points_per_centroid=1)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1])


def fit_level(x: np.ndarray, k: int, *, iters: int, seed: int, balanced: bool,
              slack: float = 1.0, balance_iters: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One level: centroids (K, d) and labels (N,) for residuals x (N, d)."""
    c = _kmeans(x, k, iters, seed)
    if not balanced:
        return c, nearest(x, c)
    cap = max(math.ceil(x.shape[0] / k), math.ceil(math.ceil(x.shape[0] / k) * slack))
    labels = balanced_assign(x, c, cap)
    for _ in range(balance_iters):
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty, None]
        labels = balanced_assign(x, c, cap)
    return c, labels


def fit(x: np.ndarray, *, levels: int, codebook_size: int, iters: int, seed: int,
        balanced: bool, slack: float = 1.0, balance_iters: int = 2,
        on_level: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit L residual levels. x: (N, d). Returns centroids (L, K, d) float32, codes (N, L) int32."""
    x = check_embeddings(x, codebook_size)
    residual = x.copy()
    cents, codes = [], []
    for level in range(levels):
        c, lab = fit_level(residual, codebook_size, iters=iters, seed=seed + level,
                           balanced=balanced, slack=slack, balance_iters=balance_iters)
        residual -= c[lab]
        cents.append(c)
        codes.append(lab)
        if on_level is not None:
            on_level(level)
    return np.stack(cents).astype(np.float32), np.stack(codes, axis=1).astype(np.int32)


def encode(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest-centroid residual encoding (no capacity). x: (N, d) -> codes (N, L) int32."""
    x = check_embeddings(x)
    if x.shape[1] != centroids.shape[2]:
        raise TokenizerError(f"embedding dimension {x.shape[1]} does not match the codebook's "
                             f"{centroids.shape[2]}")
    residual = x.copy()
    codes = np.empty((x.shape[0], centroids.shape[0]), dtype=np.int32)
    for level, c in enumerate(centroids):
        codes[:, level] = nearest(residual, c)
        residual -= c[codes[:, level]]
    return codes


def decode(codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Sum of the chosen centroids. codes: (N, l <= L) -> x_hat (N, d)."""
    codes = np.asarray(codes)
    out = np.zeros((codes.shape[0], centroids.shape[2]), dtype=np.float32)
    for level in range(codes.shape[1]):
        out += centroids[level][codes[:, level]]
    return out
