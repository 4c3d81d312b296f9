"""Most-popular items: the floor every recommender must clear."""

from __future__ import annotations

import pytest

from onerec.baselines import fit_popularity


def test_popularity_ranks_items_by_training_frequency():
    pop = fit_popularity({1: [3, 3, 2], 2: [3, 1, 2], 3: [5]})
    assert pop.ranking == [3, 2, 1, 5]  # ties (1 and 5 once) broken by the smaller id
    assert pop.recommend(n_users=2, k=2) == [[3, 2], [3, 2]]


def test_popularity_does_not_exclude_history():
    pop = fit_popularity([[1, 1, 2]])
    assert pop.recommend(1, 1) == [[1]]  # the user already has item 1; it is still recommended


def test_padding_is_never_ranked_and_k_must_be_positive():
    pop = fit_popularity({1: [0, 0, 0, 4], 2: [4, 7]})
    assert pop.ranking == [4, 7] and pop.counts == {4: 2, 7: 1}
    assert pop.recommend(n_users=1, k=5) == [[4, 7]]  # fewer items than k: all of them
    with pytest.raises(ValueError, match="k must be > 0"):
        pop.recommend(n_users=1, k=0)
