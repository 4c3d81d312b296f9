"""Item-kNN blended with recent popularity."""

from __future__ import annotations

import numpy as np
import pytest


def test_itemknn_personal_score_follows_co_engagement_and_alpha_moves_to_popularity():
    from onerec.baselines import fit_itemknn

    # items 1 and 2 go together; 3 and 4 go together; 9 is the recent hit
    hist = {0: [1, 2], 1: [1, 2], 2: [3, 4], 3: [3, 4, 1]}
    knn = fit_itemknn(hist, recent=[9, 9, 9, 4], n_recent=5)
    assert knn.similarity.shape == (5, 5) and np.allclose(np.diag(knn.similarity), 0)
    personal = knn.recommend([[1], [3]], k=2, alpha=0.0)
    assert personal[0][0] == 2 and personal[1][0] == 4  # the co-engaged item comes first
    popular = knn.recommend([[1], [3]], k=1, alpha=10.0)
    assert popular == [[9], [9]]  # a large alpha is popularity for everyone
    assert knn.recommend([[]], k=1, alpha=0.5) == [[9]]  # no history: recent popularity


def test_itemknn_rejects_bad_arguments():
    from onerec.baselines import fit_itemknn

    with pytest.raises(ValueError, match="n_recent"):
        fit_itemknn({0: [1]}, recent=[1], n_recent=0)
    with pytest.raises(ValueError, match="no items"):
        fit_itemknn({0: []}, recent=[])
    knn = fit_itemknn({0: [1, 2]}, recent=[1])
    with pytest.raises(ValueError, match="k must be"):
        knn.recommend([[1]], k=0, alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        knn.recommend([[1]], k=1, alpha=-1.0)
