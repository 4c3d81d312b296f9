"""The synthetic generator: seeded, in schema, learnable, readable as a KuaiRand folder."""

from __future__ import annotations

import pandas as pd

from onerec.config import DataConfig
from onerec.data import EVENT_COLUMNS, kuairand
from onerec.data.synthetic import make_dataset, write_folder


def test_synthetic_generator_is_seeded_and_in_schema():
    cfg = DataConfig(synthetic_users=30, synthetic_items=40, synthetic_events=500)
    a, b = make_dataset(cfg), make_dataset(cfg)
    pd.testing.assert_frame_equal(a.events, b.events)
    c = make_dataset(cfg, seed=7)
    assert not a.events.equals(c.events)
    assert {col: str(t) for col, t in a.events.dtypes.items()} == EVENT_COLUMNS
    assert a.events["time_ms"].is_monotonic_increasing
    assert 0.2 < a.events["is_click"].mean() < 0.8
    # long views imply clicks, follows imply likes: the feedback funnel is consistent
    assert (a.events["long_view"] <= a.events["is_click"]).all()
    assert (a.events["is_follow"] <= a.events["is_like"]).all()


def test_synthetic_has_a_learnable_signal():
    ds = make_dataset(n_users=100, n_items=120, n_events=8000, seed=3)
    ev = ds.events.merge(ds.items[["video_id", "tag"]], on="video_id")
    # a user's click rate on their most-shown tag beats their click rate on other tags
    top = ev.groupby("user_id")["tag"].agg(lambda s: s.value_counts().index[0])
    on_top = ev["tag"].to_numpy() == top.reindex(ev["user_id"]).to_numpy()
    assert ev.loc[on_top, "is_click"].mean() > ev.loc[~on_top, "is_click"].mean() + 0.05


def test_synthetic_folder_loads_back_through_the_kuairand_reader(tmp_path):
    ds = make_dataset(n_users=20, n_items=30, n_events=300)
    write_folder(ds, tmp_path, n_logs=3)
    assert len(kuairand.log_files(tmp_path)) == 3
    back = kuairand.load(tmp_path)
    pd.testing.assert_frame_equal(back.events, ds.events)
