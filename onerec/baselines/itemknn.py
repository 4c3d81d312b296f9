"""Item-kNN blended with recent popularity: the personal-versus-popular trade-off of a day.

Item-based collaborative filtering (Sarwar et al. 2001; the "i2i" recall channel of a
cascade): items are similar when the same users engaged with both (cosine over the user x item
matrix), and a user's score for an item is its summed similarity to the user's last
`n_recent` items. On short-video logs a day's positives follow that day's trending videos, so
the personal score alone ranks poorly; `alpha` mixes in (log) recent popularity, and sweeping
it traces how much catalogue coverage personalisation buys for how much recall
(`bench.demo_frontier`, docs/results.md). Scores are scaled to [0, 1] per part before mixing.
The similarity matrix is dense (n x n floats): a baseline for catalogues of thousands of items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass
class ItemKNN:
    """Cosine item-item similarities over `items` (dense ids 0..n-1 map to `items`), and the
    recent popularity counts the blend uses."""

    items: np.ndarray  # (n,) item ids
    similarity: np.ndarray  # (n, n) cosine, zero diagonal
    recent: np.ndarray  # (n,) positive events in the recent window
    n_recent: int = 20

    def __post_init__(self) -> None:
        self.index = {int(v): i for i, v in enumerate(self.items)}  # item id -> row

    def scores(self, history: Sequence[int], alpha: float) -> np.ndarray:
        """(n,) blended scores of every item for one history (oldest first)."""
        rows = [self.index[int(v)] for v in history[-self.n_recent:] if int(v) in self.index]
        personal = self.similarity[rows].sum(0) if rows else np.zeros(len(self.items))
        personal = personal / max(float(personal.max()), 1e-12)
        popular = np.log1p(self.recent)
        return personal + alpha * popular / max(float(popular.max()), 1e-12)

    def recommend(self, histories: Sequence[Sequence[int]], k: int, alpha: float
                  ) -> list[list[int]]:
        """k items per history, best blended score first; items already in the history are
        kept (re-engagement counts on short-video logs)."""
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        out = []
        for hist in histories:
            top = np.argsort(-self.scores(hist, alpha), kind="stable")[:k]
            out.append([int(self.items[i]) for i in top])
        return out


def fit_itemknn(histories: dict[int, Sequence[int]], recent: Sequence[int], *,
                n_recent: int = 20) -> ItemKNN:
    """Similarities from user -> engaged items (any order, repeats count once) and recent
    popularity from `recent` (one item id per positive event of the recent window)."""
    if n_recent <= 0:
        raise ValueError(f"n_recent must be > 0, got {n_recent}")
    items = np.unique(np.concatenate([np.asarray(list(h), dtype=np.int64)
                                      for h in histories.values()] + [np.asarray(recent,
                                                                                 np.int64)]))
    if len(items) == 0:
        raise ValueError("no items: every history is empty and there are no recent events")
    pos = {int(v): i for i, v in enumerate(items)}
    rows, cols = [], []
    for r, hist in enumerate(histories.values()):
        for c in {pos[int(v)] for v in hist}:
            rows.append(r)
            cols.append(c)
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(histories), len(items)))
    co = (x.T @ x).toarray()
    norm = np.sqrt(np.diag(co).copy())
    sim = co / np.maximum(np.outer(norm, norm), 1e-12)
    np.fill_diagonal(sim, 0.0)
    counts = np.zeros(len(items))
    np.add.at(counts, [pos[int(v)] for v in recent], 1.0)
    return ItemKNN(items=items, similarity=sim, recent=counts, n_recent=n_recent)
