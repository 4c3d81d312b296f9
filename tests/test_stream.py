"""Training requests from the event log (`onerec.stream`): contexts strictly before the request,
built by the same `UserSequences` the feature store's backfill and stream writer update, so a
replayed event counts once in training as it does online."""

from __future__ import annotations

import numpy as np
import pandas as pd

from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.features.sequences import SequenceBook
from onerec.stream import requests_from_events


def test_the_context_after_the_log_is_the_feature_stores_and_a_replay_counts_once():
    cfg = Config.from_preset("tiny")
    ev = make_dataset(cfg.data).events.iloc[:400].reset_index(drop=True)
    index = {int(v): i + 1 for i, v in enumerate(sorted(ev["video_id"].unique()))}
    # the same log with every event of the first 100 replayed right after itself (a retry)
    dup = ev.iloc[:100]
    replayed = pd.concat([ev, dup]).sort_values("time_ms", kind="stable").reset_index(drop=True)
    state: dict = {}
    once = requests_from_events(ev, index, cfg.data, final_state=state)
    state_replayed: dict = {}
    twice = requests_from_events(replayed, index, cfg.data, final_state=state_replayed)
    assert state_replayed == state  # the replay changed no context
    book = SequenceBook(cfg.data)
    stats, _ = book.apply(replayed)
    assert stats.skipped == len(dup)
    for u, s in book.users.items():
        short, pos, long = s.video_ids()
        assert state[u] == ([index[v] for v in short], [index[v] for v in pos],
                            [index[v] for v in long])
    # the requests' contexts are equal too; only the replayed targets are new
    assert np.array_equal(np.unique(once.short, axis=0), np.unique(twice.short, axis=0))
    assert twice.n_targets >= once.n_targets
