from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from onerec.data.synthetic import make_dataset
from onerec.evaluate import (
    DAY_MS,
    EvalReport,
    auc,
    coverage,
    dump_recs,
    rank_metrics,
    rank_metrics_multi,
    read_recs,
    split_cut_ms,
    temporal_split,
    test_targets,
)


def test_auc_counts_ties_half_and_is_nan_with_one_class():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_target_at_rank_zero_scores_one():
    m = rank_metrics([[7, 1, 2, 3, 4, 5]], [7])
    assert m == {"recall@5": 1.0, "ndcg@5": 1.0, "recall@10": 1.0, "ndcg@10": 1.0}


def test_target_at_rank_three_scores_one_over_log2_five():
    m = rank_metrics([[1, 2, 3, 7, 4, 5]], [7], ks=(3, 4, 5))
    assert m["recall@3"] == 0.0 and m["ndcg@3"] == 0.0  # rank 3 is outside the top 3
    assert m["recall@4"] == 1.0
    assert m["ndcg@4"] == pytest.approx(1 / math.log2(5))
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(5))


def test_absent_target_scores_zero_and_rows_are_averaged():
    m = rank_metrics([[1, 2, 3], [9, 8, 7], [5]], [1, 4, 6], ks=(1, 3))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(1 / 3)


def test_target_exactly_at_the_k_boundary():
    ranked = [[0, 1, 2, 3, 4, 99, 5, 6, 7, 8, 9]]
    assert rank_metrics(ranked, [99], ks=(5,))["recall@5"] == 0.0  # rank 5 is the 6th item
    m = rank_metrics(ranked, [99], ks=(6,))
    assert m["recall@6"] == 1.0
    assert m["ndcg@6"] == pytest.approx(1 / math.log2(7))


def test_repeated_items_count_once():
    # 3 appears twice: the duplicate does not push 7 out of the top 3
    assert rank_metrics([[3, 3, 4, 7]], [7], ks=(3,))["recall@3"] == 1.0


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="targets"):
        rank_metrics([[1]], [1, 2])
    with pytest.raises(ValueError, match="ks"):
        rank_metrics([[1]], [1], ks=(0,))


def test_multi_target_recall_normalises_by_min_k_and_targets():
    # two targets, both in the top 5: recall 1, ndcg from ranks 0 and 2 vs ideal ranks 0 and 1
    m = rank_metrics_multi([[1, 9, 2, 8, 7]], [{1, 2}], ks=(5,))
    assert m["recall@5"] == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    # six targets, k=2: a list with two hits is perfect (recall over min(2, 6) = 2)
    perfect = rank_metrics_multi([[1, 2, 3]], [{1, 2, 3, 4, 5, 6}], ks=(2,))
    assert perfect == {"recall@2": 1.0, "ndcg@2": pytest.approx(1.0)}
    half = rank_metrics_multi([[1, 9]], [{1, 2, 3}], ks=(2,))
    assert half["recall@2"] == 0.5


def test_multi_target_skips_rows_without_targets():
    m = rank_metrics_multi([[1, 2], [3, 4]], [[1], []], ks=(1,))
    assert m == {"recall@1": 1.0, "ndcg@1": 1.0}


def test_multi_target_with_one_target_equals_single_target_metrics():
    ranked = [[4, 5, 6, 1], [1, 2, 3, 4], [9, 8, 7, 6]]
    targets = [1, 2, 5]
    single = rank_metrics(ranked, targets, ks=(2, 4))
    multi = rank_metrics_multi(ranked, [[t] for t in targets], ks=(2, 4))
    assert multi == pytest.approx(single)


def test_coverage_is_the_share_of_items_in_anyones_top_k():
    assert coverage([[1, 2, 3], [2, 4, 5]], n_items=10, k=2) == pytest.approx(0.3)  # {1,2,4}
    assert coverage([[1, 2, 3]] * 5, n_items=3, k=3) == 1.0


def test_eval_report_serialises_metrics_and_extras():
    r = EvalReport({"recall@10": 0.5}, n_users=3, legality=0.99, extras={"model": "sasrec"})
    d = r.to_dict()
    assert d == {"metrics": {"recall@10": 0.5}, "n_users": 3, "legality": 0.99,
                 "extras": {"model": "sasrec"}}
    json.dumps(d)


def _events(times_ms, users=None, videos=None, long_view=None, like=None):
    n = len(times_ms)
    return pd.DataFrame({
        "user_id": users or [1] * n,
        "video_id": videos or list(range(n)),
        "time_ms": times_ms,
        "long_view": long_view or [0] * n,
        "is_like": like or [0] * n,
    })


def test_temporal_split_cuts_at_a_utc_midnight():
    ds = make_dataset(n_users=30, n_items=40, n_events=600, days=7, seed=1)
    train, test = temporal_split(ds.events, test_days=2)
    cut = split_cut_ms(ds.events, 2)
    assert cut % DAY_MS == 0
    assert len(train) + len(test) == len(ds.events)
    assert (test["time_ms"] >= cut).all() and len(test) > 0
    assert (train["time_ms"] < cut).all() and len(train) > 0
    # the last day's first and last events are both test with test_days=1
    day = 5 * DAY_MS
    _, t1 = temporal_split(_events([day - 1, day, day + DAY_MS - 1]), 1)
    assert list(t1["time_ms"]) == [day, day + DAY_MS - 1]


def test_temporal_split_with_zero_test_days_keeps_everything_for_training():
    train, test = temporal_split(_events([1, 2, 3]), 0)
    assert len(train) == 3 and test.empty


def test_test_targets_are_positive_unique_and_in_time_order():
    ev = _events(times_ms=[30, 10, 20, 40, 50, 60],
                 users=[1, 1, 1, 1, 2, 2],
                 videos=[5, 6, 7, 6, 8, 9],
                 long_view=[1, 1, 0, 1, 0, 0],
                 like=[0, 0, 0, 0, 1, 0])
    assert test_targets(ev) == {1: [6, 5], 2: [8]}  # 7 and 9 are not positive; 6 once


def test_dump_recs_round_trips_json_lines(tmp_path):
    path = dump_recs(tmp_path / "out" / "recs.jsonl",
                     [(1, 5, [5, 6, 7]), {"user": 2, "target": [3, 4], "recs": [1]}])
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {"user": 1, "target": 5,
                                                        "recs": [5, 6, 7]}
    assert read_recs(path)[1] == {"user": 2, "target": [3, 4], "recs": [1]}
    assert [p.name for p in path.parent.iterdir()] == ["recs.jsonl"]  # no temporary left


def test_dump_recs_leaves_no_partial_file_on_error(tmp_path):
    path = tmp_path / "recs.jsonl"
    with pytest.raises(KeyError):
        dump_recs(path, [(1, 2, [3]), {"user": 1}])
    assert list(tmp_path.iterdir()) == []
