"""KuaiRand-Pure reader: the shipped sample, cleaning, missing and corrupt files, merged logs."""

from __future__ import annotations

import pandas as pd
import pytest

from onerec.data import EVENT_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, DataError, kuairand
from onerec.data.synthetic import make_dataset, write_folder
from tests.conftest import shared_dataset


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
