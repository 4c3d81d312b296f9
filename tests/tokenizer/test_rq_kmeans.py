"""RQ-Kmeans: residual levels, balanced assignment."""

from __future__ import annotations

import math

import numpy as np

from onerec.tokenizer import rq_kmeans
from onerec.tokenizer.rq_kmeans import balanced_assign


def clustered(n: int = 300, d: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d)) * 3
    x = centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))
    return (x + shift).astype(np.float32)


def test_decode_is_the_sum_of_chosen_centroids_and_levels_reduce_error():
    x = clustered()
    cent, codes = rq_kmeans.fit(x, levels=3, codebook_size=8, iters=10, seed=0, balanced=False)
    manual = cent[0][codes[:, 0]] + cent[1][codes[:, 1]] + cent[2][codes[:, 2]]
    assert np.allclose(rq_kmeans.decode(codes, cent), manual)
    errs = [np.linalg.norm(x - rq_kmeans.decode(codes[:, :lvl], cent), axis=1).mean()
            for lvl in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.5 * np.linalg.norm(x, axis=1).mean()


def test_balanced_option_caps_cluster_sizes():
    rng = np.random.default_rng(0)  # one dense blob holding 80% of the items
    x = np.concatenate([rng.normal(size=(240, 8)) * 0.1,
                        rng.normal(size=(60, 8)) * 5]).astype(np.float32)
    k, cap = 8, math.ceil(300 / 8)
    _, free = rq_kmeans.fit(x, levels=2, codebook_size=k, iters=10, seed=0, balanced=False)
    _, bal = rq_kmeans.fit(x, levels=2, codebook_size=k, iters=10, seed=0, balanced=True,
                           slack=1.0)
    assert max(np.bincount(free[:, 0], minlength=k)) > cap  # the cap is not free
    for level in range(2):
        assert max(np.bincount(bal[:, level], minlength=k)) <= cap


def test_balanced_assign_fills_nearest_codes_first():
    x = np.array([[0.0], [0.1], [0.2], [10.0]], np.float32)
    c = np.array([[0.0], [10.0]], np.float32)
    labels = balanced_assign(x, c, capacity=2)
    assert labels.tolist() == [0, 0, 1, 1]  # 0.2 is the farthest from code 0, so it moves


def test_a_few_candidates_a_row_keep_the_capacity_and_most_of_the_greedy_assignment():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    c = rng.normal(size=(64, 6)).astype(np.float32)
    cap = math.ceil(3000 / 64)
    exact = balanced_assign(x, c, cap, candidates=64)  # every code a row: the greedy itself
    assert np.bincount(exact, minlength=64).max() <= cap
    for m in (16, 1):  # one candidate: most rows are refused and go on among codes with room
        few = balanced_assign(x, c, cap, candidates=m)
        assert (few >= 0).all() and np.bincount(few, minlength=64).max() <= cap
        assert (few == exact).mean() > 0.5
    # the rows' own nearest code wins wherever it has room, as in the greedy
    near = rq_kmeans.nearest(x, c)
    assert (balanced_assign(x, c, 3000, candidates=4) == near).all()


def test_nearest_in_blocks_equals_one_block(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    c = rng.normal(size=(40, 5)).astype(np.float32)
    whole = rq_kmeans.sq_distances(x, c).argmin(1)
    monkeypatch.setattr(rq_kmeans, "BLOCK", 97)
    assert np.array_equal(rq_kmeans.nearest(x, c), whole)
    order, dist = rq_kmeans.nearest_codes(x, c, 7)  # faiss's k-nearest search
    full, full_d = rq_kmeans.nearest_codes(x, c, 40)  # every code: a sorted row
    assert np.array_equal(order, full[:, :7]) and np.array_equal(full[:, 0], whole)
    assert np.allclose(dist, full_d[:, :7], atol=1e-4)
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
