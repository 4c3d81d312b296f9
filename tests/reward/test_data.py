"""The reward model's impressions: each with its own labels and its user's earlier context."""

from __future__ import annotations

import numpy as np

from onerec.evaluate import split_cut_ms


def test_labels_come_from_each_impressions_own_feedback(tiny):
    _cfg, ds, item_ids, _codes, shaper, data = tiny
    ev = ds.events.reset_index(drop=True)
    rows = data.reqs.target_rows
    assert len(rows) == data.labels.shape[0] == len(data.target_req)
    np.testing.assert_array_equal(data.labels[:, 0], ev["is_click"].to_numpy()[rows])
    np.testing.assert_array_equal(data.labels[:, 3], ev["is_follow"].to_numpy()[rows])
    np.testing.assert_allclose(data.labels[:, 5], shaper(ev["duration_ms"].to_numpy()[rows],
                                                         ev["play_time_ms"].to_numpy()[rows]))
    # every impression is a target once, and the target is that impression's video
    assert sorted(rows.tolist()) == list(range(len(ev)))
    index = {int(v): i + 1 for i, v in enumerate(item_ids)}
    assert [index[v] for v in ev["video_id"].to_numpy()[rows]] == data.reqs.targets.tolist()


def test_heldout_split_is_by_request_time(tiny):
    _cfg, ds, *_rest, data = tiny
    cut = split_cut_ms(ds.events, 2)
    tr, te = data.split(cut)
    assert len(tr) and len(te) and len(tr) + len(te) == len(data.labels)
    assert data.target_time[tr].max() < cut <= data.target_time[te].min()
