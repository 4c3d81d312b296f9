from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from onerec.config import DataConfig
from onerec.data import EVENT_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, DataError, kuairand
from onerec.data.schema import conform
from onerec.data.sequences import leave_one_out, load_beauty, load_microlens
from onerec.data.synthetic import make_dataset, write_folder

from .conftest import shared_dataset


@pytest.fixture(scope="module")
def shipped(shipped_dir):
    return kuairand.load(shipped_dir)


def test_shipped_sample_conforms_to_the_event_schema(shipped):
    ev = shipped.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert {c: str(t) for c, t in ev.dtypes.items()} == EVENT_COLUMNS
    assert len(ev) == 90_140 + 128_736 == 218_876
    assert ev["time_ms"].is_monotonic_increasing
    assert not ev.duplicated(["user_id", "video_id", "time_ms"]).any()
    assert (ev["duration_ms"] > 0).all()
    assert set(ev["video_id"]) <= set(shipped.items["video_id"])


def test_shipped_items_and_users_have_their_schemas(shipped):
    assert list(shipped.items.columns[: len(ITEM_COLUMNS)]) == list(ITEM_COLUMNS)
    assert len(shipped.items) == 7_583
    assert shipped.items["video_id"].is_unique
    assert list(shipped.users.columns[: len(USER_COLUMNS)]) == list(USER_COLUMNS)
    assert shipped.users["user_id"].is_unique


def test_shipped_summary_matches_kuairand_rates(shipped):
    s = shipped.summary()
    assert 0.40 < s["click_rate"] < 0.50  # KuaiRand-Pure: 0.44 before cleaning
    assert s["users"] > 25_000


def test_user_history_is_shipped(shipped_dir):
    hist = kuairand.read_history(shipped_dir)
    assert hist is not None and len(hist) == 26_469
    assert {"user_id", "watch_seq", "like_seq", "long_watch_seq"} <= set(hist.columns)


def test_clean_events_drops_unknown_durations_and_repeated_keys():
    ev = make_dataset(n_users=5, n_items=5, n_events=20, seed=1).events
    dirty = pd.concat([ev, ev.iloc[[0, 1]]], ignore_index=True).sort_values("time_ms", kind="stable")
    dirty.loc[dirty.index[5], "duration_ms"] = 0
    clean, counts = kuairand.clean_events(dirty)
    assert counts["dropped_duplicate_key"] >= 2
    assert counts["dropped_unknown_duration"] == 1
    assert counts["output"] == len(clean) == counts["input"] - 2 - 1 - (counts["dropped_duplicate_key"] - 2)
    assert not clean.duplicated(["user_id", "video_id", "time_ms"]).any()


def test_prepare_sample_reproduces_the_shipped_files(tmp_path, shipped_dir):
    src = shared_dataset("kuairand-pure")
    report = kuairand.prepare_sample(src, tmp_path)
    assert report["log_2022-04-25_to_04-30.parquet"]["output"] == 90_140
    for name in ("log_2022-05-01_to_05-08.parquet", "video_features.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name),
                                      pd.read_parquet(shipped_dir / name))


def test_missing_folder_and_missing_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        kuairand.load(tmp_path / "nope")
    with pytest.raises(DataError, match="no impression logs"):
        kuairand.load(tmp_path)
    write_folder(make_dataset(n_users=5, n_items=5, n_events=20), tmp_path)
    (tmp_path / "video_features.parquet").unlink()
    with pytest.raises(DataError, match=r"missing file: .*video_features\.parquet"):
        kuairand.load(tmp_path)


def test_corrupt_parquet_gives_a_clear_error(tmp_path):
    write_folder(make_dataset(n_users=5, n_items=5, n_events=20), tmp_path)
    (tmp_path / "log_part00.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"cannot read .*log_part00\.parquet as parquet"):
        kuairand.load(tmp_path)


def test_conform_names_the_missing_column_and_the_bad_cast():
    ev = make_dataset(n_users=5, n_items=5, n_events=20).events
    with pytest.raises(DataError, match=r"events: missing column\(s\) \['long_view'\]"):
        conform(ev.drop(columns="long_view"), EVENT_COLUMNS, "events")
    bad = ev.astype({"user_id": "object"})
    bad.loc[0, "user_id"] = "alice"
    with pytest.raises(DataError, match=r"events\.user_id: cannot cast to int64"):
        conform(bad, EVENT_COLUMNS, "events")
    nulls = ev.astype({"video_id": "Int64"})
    nulls.loc[0, "video_id"] = pd.NA
    with pytest.raises(DataError, match=r"events\.video_id: 1 null value"):
        conform(nulls, EVENT_COLUMNS, "events")


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


def test_leave_one_out_follows_the_tiger_protocol():
    seqs = {1: list(range(1, 31)), 2: [5, 6, 7]}
    split = leave_one_out(seqs, max_history=20)
    assert split.train[1] == list(range(1, 29))
    user, hist, target = split.test[0]
    assert (user, target) == (1, 30) and hist == list(range(10, 30)) and len(hist) == 20
    assert split.valid[0] == (1, list(range(9, 29)), 29)
    assert split.test[1] == (2, [5, 6], 7)
    with pytest.raises(DataError, match="at least 3"):
        leave_one_out({3: [1, 2]})


def test_beauty_loader_matches_the_published_statistics():
    data = load_beauty(shared_dataset("amazon-beauty"))
    assert len(data.sequences) == 22_363
    assert data.n_items == 12_101
    assert sum(len(s) for s in data.sequences.values()) == 198_502
    assert len(data.item_text) == 12_101
    assert sum(1 for t in data.item_text.values() if t) == 12_100  # one item has no title words
    split = data.split()
    assert len(split.test) == 22_363 and max(len(h) for _, h, _ in split.test) == 20


def test_microlens_loader_shifts_ids_so_zero_is_padding():
    data = load_microlens(shared_dataset("microlens"))
    assert len(data.sequences) == 13_210
    assert sum(len(s) for s in data.sequences.values()) == 78_255
    assert min(min(s) for s in data.sequences.values()) >= 1
    assert len(data.item_text) == 5_312 and data.item_names[1] == "0"


def test_beauty_format_errors_name_file_and_line(tmp_path):
    (tmp_path / "sequential_data.txt").write_text("1 2 3\n2 x 4\n")
    with pytest.raises(DataError, match=r"sequential_data\.txt line 2"):
        load_beauty(tmp_path)
    (tmp_path / "sequential_data.txt").write_text("1 2 3 4\n")
    with pytest.raises(DataError, match=r"missing file: .*datamaps\.json"):
        load_beauty(tmp_path)
    (tmp_path / "datamaps.json").write_text("{not json")
    with pytest.raises(DataError, match=r"datamaps\.json: invalid JSON"):
        load_beauty(tmp_path)


def test_beauty_format_loader_reads_any_folder(tmp_path):
    (tmp_path / "sequential_data.txt").write_text("1 1 2 3\n2 2 3 1 4\n")
    (tmp_path / "datamaps.json").write_text('{"item2id": {"A": "1", "B": "2", "C": "3", "D": "4"}}')
    (tmp_path / "item_text.txt").write_text("A red lipstick\nB blue shampoo\n")
    data = load_beauty(tmp_path)
    assert data.n_items == 4 and data.item_text == {1: "red lipstick", 2: "blue shampoo"}
    assert data.item_names[4] == "D"
    assert np.array_equal(data.sequences[2], [2, 3, 1, 4])


def test_overlapping_time_ordered_logs_merge_into_one_stream(tmp_path):
    ds = make_dataset(n_users=10, n_items=10, n_events=200)
    ev = ds.events
    write_folder(ds, tmp_path, n_logs=1)
    (tmp_path / "log_part00.parquet").unlink()
    # two files whose time ranges interleave, each ordered by itself
    ev.iloc[0::2].to_parquet(tmp_path / "log_a.parquet")
    ev.iloc[1::2].to_parquet(tmp_path / "log_b.parquet")
    merged = kuairand.read_events(tmp_path)
    assert merged["time_ms"].is_monotonic_increasing and len(merged) == len(ev)
    # an unordered file is not hidden by a sort: validation must see it
    ev.iloc[1::2].iloc[::-1].to_parquet(tmp_path / "log_b.parquet")
    assert not kuairand.read_events(tmp_path)["time_ms"].is_monotonic_increasing
