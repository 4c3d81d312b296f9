"""Item-to-item transitions: what most often came right after the user's last item.

A first-order Markov chain over the training sequences (the memory half of FPMC, Rendle et
al. 2010; the "item-to-item" recall channel of a cascade). It is a baseline and a probe: on
Amazon Beauty a large share of test targets are items that other users took right after the
same last item, and a sequential model that cannot memorise these pairs loses most of its gap
there (`split_by_transition`, docs/results.md). Lists are filled with popularity when the last
item has fewer than k followers, so every list has k distinct items.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from onerec.baselines.popularity import Popularity, fit_popularity


@dataclass
class Transitions:
    """Followers of each item in training (item -> Counter of next items) plus popularity."""

    followers: dict[int, Counter[int]]
    popularity: Popularity

    def recommend(self, histories: Sequence[Sequence[int]], k: int) -> list[list[int]]:
        """k distinct items per history: the last item's most frequent followers (ties by the
        smaller id), then the most popular items not yet listed."""
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        out = []
        for hist in histories:
            nxt = self.followers.get(int(hist[-1]), Counter()) if len(hist) else Counter()
            top = sorted(nxt, key=lambda i: (-nxt[i], i))[:k]
            seen = set(top)
            for i in self.popularity.ranking:
                if len(top) >= k:
                    break
                if i not in seen:
                    top.append(i)
                    seen.add(i)
            out.append(top)
        return out

    def seen(self, last: int, target: int) -> bool:
        """True when `target` followed `last` somewhere in training."""
        return self.followers.get(int(last), Counter())[int(target)] > 0


def fit_transitions(train_seqs: dict[int, list[int]]) -> Transitions:
    """Count consecutive (item, next item) pairs in user -> items sequences (oldest first)."""
    followers: dict[int, Counter[int]] = defaultdict(Counter)
    for seq in train_seqs.values():
        for a, b in pairwise(seq):
            if a > 0 and b > 0:
                followers[int(a)][int(b)] += 1
    return Transitions(followers=dict(followers), popularity=fit_popularity(train_seqs))


def split_by_transition(model: Transitions, rows: Sequence[tuple[int, list[int], int]]
                        ) -> list[bool]:
    """Per (user, history, target) row: did the pair (last history item -> target) occur in
    training? The rows where it did are the ones item-to-item memory can answer."""
    return [bool(h) and model.seen(h[-1], t) for _, h, t in rows]
