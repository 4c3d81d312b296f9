"""Most-popular items: the floor every recommender must clear.

Counts each item's occurrences in the training sequences and recommends the k most frequent
to everyone (ties broken by the smaller id, so the list is deterministic). Nothing is excluded,
not even items the user already has: the TIGER protocol ranks the full catalogue without
removing history, and the baseline follows the protocol it is compared under.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Popularity:
    """Items ordered by training frequency, most frequent first."""

    ranking: list[int]  # all items seen in training, most frequent first
    counts: dict[int, int]  # item -> training occurrences

    def recommend(self, n_users: int, k: int) -> list[list[int]]:
        """The same top-k list for each of `n_users` users."""
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        top = self.ranking[:k]
        return [list(top) for _ in range(n_users)]


def fit_popularity(train_seqs: dict[int, list[int]] | Iterable[Iterable[int]]) -> Popularity:
    """Count items in user -> items sequences (or any iterable of item lists)."""
    seqs = train_seqs.values() if isinstance(train_seqs, dict) else train_seqs
    counts: Counter[int] = Counter()
    for seq in seqs:
        counts.update(int(i) for i in seq)
    counts.pop(0, None)  # padding is never an item
    ranking = sorted(counts, key=lambda i: (-counts[i], i))
    return Popularity(ranking=ranking, counts=dict(counts))
