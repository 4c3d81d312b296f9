"""Item-to-item transitions, filled by popularity."""

from __future__ import annotations

import pytest


def test_transitions_recommend_the_last_items_followers_then_popularity():
    from onerec.baselines import fit_transitions

    model = fit_transitions({1: [1, 2, 3], 2: [1, 2, 4], 3: [1, 5, 5], 4: [6, 6, 6]})
    # 1 was followed by 2 twice and by 5 once; the rest is filled by popularity (1 and 6 occur
    # three times each: the smaller id first), without repeating 2 or 5
    assert model.recommend([[9, 1]], 4) == [[2, 5, 1, 6]]
    # an item nobody followed, and an empty history: popularity alone, k distinct items
    assert model.recommend([[4], []], 3) == [[1, 6, 2], [1, 6, 2]]
    with pytest.raises(ValueError, match="k must be > 0"):
        model.recommend([[1]], 0)


def test_split_by_transition_marks_pairs_seen_in_training():
    from onerec.baselines import fit_transitions, split_by_transition

    model = fit_transitions({1: [1, 2, 3]})
    rows = [(1, [5, 1], 2), (2, [2], 3), (3, [3], 1), (4, [], 1)]
    assert split_by_transition(model, rows) == [True, True, False, False]
