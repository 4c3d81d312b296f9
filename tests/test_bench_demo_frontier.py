"""bench.demo_frontier: the lift re-ranking it scores and its run-folder lookup."""

from __future__ import annotations

import numpy as np
import pytest

from bench.demo_frontier import first_cycle, lift_rerank


def test_lift_rerank_keeps_beam_order_at_beta_zero_and_promotes_personal_items():
    # two users; item 1 is everyone's top (popular), item 3 only user 0's, item 2 only user 1's
    items = np.array([[1, 3, 0], [1, 2, 4]])
    scores = np.log(np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 1e-9]]))
    scores[1, 2] = -np.inf  # a dead beam never comes back
    assert lift_rerank(items, scores, 0.0, 3) == [[1, 3], [1, 2]]  # the 0 item is no item
    # p-bar(1) = 0.6, p-bar(3) = p-bar(2) = 0.15: at beta 1 the lift of 3 (2.0) beats 1's (1.0)
    assert lift_rerank(items, scores, 1.0, 3) == [[3, 1], [2, 1]]
    assert lift_rerank(items, scores, 1.0, 1) == [[3], [2]]


def test_first_cycle_names_the_missing_demo(tmp_path):
    with pytest.raises(SystemExit, match="make demo"):
        first_cycle(tmp_path)
    for name in ("run-b", "run-a"):
        (tmp_path / "pipeline" / "kfp" / name).mkdir(parents=True)
    assert first_cycle(tmp_path).name == "run-a"
