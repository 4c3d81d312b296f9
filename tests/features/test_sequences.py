"""Bounded user sequences behind the feature views (`onerec.features.sequences`): what each event
adds, the watermark that makes a replay change nothing, history rows stamped for point-in-time
joins, and the round trip through feature rows."""

from __future__ import annotations

import math

import pandas as pd

from onerec.config import DataConfig
from onerec.features.sequences import VIEWS, SequenceBook, UserSequences, rows_frame

CFG = DataConfig(max_seq_len=2, max_pos_seq_len=2, max_long_seq_len=3)


def events(*rows: tuple[int, int, int, int, int]) -> pd.DataFrame:
    """(user, video, time_ms, click, long_view) rows as an event frame."""
    df = pd.DataFrame(rows, columns=["user_id", "video_id", "time_ms", "is_click", "long_view"])
    return df.assign(is_like=0, watch_ratio=0.5)


def test_each_event_joins_long_a_click_recent_and_a_long_view_positive_within_the_bounds():
    s = UserSequences.empty(CFG)
    for t, (video, click, positive) in enumerate([(1, True, False), (2, False, True),
                                                  (3, True, True), (4, True, False)]):
        s.observe(video, t, click=click, positive=positive, watch_ratio=1.0)
    assert s.video_ids() == ([3, 4], [2, 3], [2, 3, 4])  # oldest dropped past each bound
    assert s.last_ms == 3 and s.last_videos == {4}


def test_the_watermark_skips_replays_and_late_events_but_not_a_new_video_at_the_same_ms():
    s = UserSequences.empty(CFG)
    s.observe(7, 100, click=True, positive=False, watch_ratio=1.0)
    assert not s.accepts(7, 100)  # replayed
    assert not s.accepts(8, 99)  # late
    assert s.accepts(8, 100) and s.accepts(7, 101)


def test_a_replayed_batch_changes_nothing_and_is_counted_as_skipped():
    book = SequenceBook(CFG)
    log = events((1, 10, 5, 1, 0), (2, 11, 6, 0, 1), (1, 12, 7, 1, 1))
    stats, rows = book.apply(log)
    assert (stats.applied, stats.skipped, stats.users) == (3, 0, 2)
    assert {r["user_id"] for r in rows["user_long"]} == {1, 2}
    assert [r["user_id"] for r in rows["user_recent"]] == [1]  # user 2 did not click
    before = {u: s.video_ids() for u, s in book.users.items()}
    stats, rows = book.apply(log)
    assert (stats.applied, stats.skipped, stats.users) == (0, 3, 0)
    assert all(rows[v] == [] for v in VIEWS)
    assert {u: s.video_ids() for u, s in book.users.items()} == before


def test_history_rows_start_empty_at_the_epoch_and_are_stamped_one_ms_after_each_event():
    book = SequenceBook(CFG)
    _, rows = book.apply(events((1, 10, 5, 1, 0), (1, 11, 9, 0, 0)), history_rows=True)
    stamps = [(r["stamp_ms"], r["long_video_ids"]) for r in rows["user_long"]]
    assert stamps == [(0, []), (6, [10]), (10, [10, 11])]
    assert [(r["stamp_ms"], r["recent_video_ids"]) for r in rows["user_recent"]] == [
        (0, []), (6, [10])]  # the second event was not a click
    frame = rows_frame(rows["user_long"])
    assert "stamp_ms" not in frame and str(frame["event_timestamp"].dt.tz) == "UTC"
    assert frame["event_timestamp"].iloc[1] == pd.Timestamp(6, unit="ms", tz="UTC")


def test_state_round_trips_through_its_feature_rows_and_a_missing_row_is_empty():
    s = UserSequences.empty(CFG)
    s.seed([1, 2, 3, 4], positives=[3], time_ms=50)
    s.observe(5, 60, click=True, positive=True, watch_ratio=0.25)
    assert s.video_ids() == ([4, 5], [3, 5], [3, 4, 5])
    assert math.isnan(s.recent[0][1])  # a seeded watch has no known ratio
    values = {k: v for row in s.rows(9).values() for k, v in row.items() if k != "user_id"}
    back = UserSequences.from_rows(CFG, values)
    assert back.video_ids() == s.video_ids()
    assert (back.last_ms, back.last_videos) == (60, {5})
    none = UserSequences.from_rows(CFG, dict.fromkeys(values))
    assert none.video_ids() == ([], [], []) and none.last_ms == -1
