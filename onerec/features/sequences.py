"""Bounded user sequences built from the impression stream: the state behind the feature views.

No Feast here: this is the logic both the offline backfill and the online stream writer run, so
training rows and online rows cannot disagree. Per user it keeps (oldest first):
- recent: the last data.max_seq_len clicked videos, their watch ratios and times (short pathway);
- positive: the last data.max_pos_seq_len long-viewed or liked videos and times;
- long: the last data.max_long_seq_len shown videos (lifelong pathway),
the contexts training reads too: `onerec.stream.requests_from_events` keeps a `UserSequences`
per user and updates it with the same `observe`, so there is one user-context builder.

Idempotence rule: each user has a watermark, the time of the newest event applied and the videos
applied at that millisecond. An event older than the watermark, or at it with a video already
applied, is skipped; so replaying a log (or an overlapping export) changes nothing. The watermark
travels with the long sequence (every event updates it), so a restarted writer recovers it from
the online store. A genuinely late event (older than the watermark) is skipped too, and counted:
appending it would put the sequence out of time order.

Point-in-time rule: a row is stamped `stamp_ms` = newest event time + 1 ms. Feast joins rows
stamped <= the sample time, so a training sample at t sees only events strictly before t.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from onerec.config import DataConfig

VIEWS = ("user_recent", "user_positive", "user_long")
# Feature columns of each sequence view, as declared in feature_repo/definitions.py.
COLUMNS: dict[str, tuple[str, ...]] = {
    "user_recent": ("recent_video_ids", "recent_watch_ratios", "recent_times_ms"),
    "user_positive": ("positive_video_ids", "positive_times_ms"),
    "user_long": ("long_video_ids", "last_event_ms", "last_event_video_ids"),
}
PUSH_SOURCES = {v: f"{v}_push" for v in VIEWS}


@dataclass
class UserSequences:
    """One user's bounded sequences (deques of tuples, oldest first) and watermark."""

    recent: deque  # (video_id, watch_ratio, time_ms)
    positive: deque  # (video_id, time_ms)
    long: deque  # video_id
    last_ms: int = -1  # watermark: newest event time applied (-1: none yet)
    last_videos: set[int] = field(default_factory=set)  # videos applied at last_ms

    @classmethod
    def empty(cls, cfg: DataConfig) -> UserSequences:
        return cls(deque(maxlen=cfg.max_seq_len), deque(maxlen=cfg.max_pos_seq_len),
                   deque(maxlen=cfg.max_long_seq_len))

    def rows(self, user_id: int) -> dict[str, dict[str, Any]]:
        """The three feature rows (without timestamps) of this state."""
        return {
            "user_recent": {"user_id": user_id,
                            "recent_video_ids": [r[0] for r in self.recent],
                            "recent_watch_ratios": [r[1] for r in self.recent],
                            "recent_times_ms": [r[2] for r in self.recent]},
            "user_positive": {"user_id": user_id,
                              "positive_video_ids": [r[0] for r in self.positive],
                              "positive_times_ms": [r[1] for r in self.positive]},
            "user_long": {"user_id": user_id, "long_video_ids": list(self.long),
                          "last_event_ms": self.last_ms,
                          "last_event_video_ids": sorted(self.last_videos)},
        }

    def accepts(self, video: int, time_ms: int) -> bool:
        """The idempotence rule: False for an event before the watermark, or at it with a video
        already applied (a replay, or a late event)."""
        return not (time_ms < self.last_ms or (time_ms == self.last_ms and
                                               video in self.last_videos))

    def observe(self, video: int, time_ms: int, *, click: bool, positive: bool,
                watch_ratio: float) -> None:
        """Apply one event the rule accepts: every shown video joins long, a click recent, a long
        view or like positive; the watermark moves. Training
        (`onerec.stream.requests_from_events`), the backfill and the stream writer all update a
        user's context here, so the context a model trains on is the one serving reads."""
        if time_ms > self.last_ms:
            self.last_ms, self.last_videos = time_ms, set()
        self.last_videos.add(video)
        self.long.append(video)
        if click:
            self.recent.append((video, watch_ratio, time_ms))
        if positive:
            self.positive.append((video, time_ms))

    def seed(self, watch: list[int], positives: list[int], time_ms: int) -> None:
        """Start from a pre-log history (KuaiRand's user_history): shown videos seed recent
        (clicks are unknown before the log; watch ratio NaN) and long, long views and likes
        seed positive; the watermark moves to the history's end."""
        self.long.extend(watch)
        self.recent.extend((v, math.nan, time_ms) for v in watch[-(self.recent.maxlen or 0):])
        self.positive.extend((v, time_ms) for v in positives[-(self.positive.maxlen or 0):])
        self.last_ms = max(self.last_ms, time_ms)

    def video_ids(self) -> tuple[list[int], list[int], list[int]]:
        """The (short, positive, long) contexts as raw video ids, oldest first: what the model
        reads once unknown videos are dropped."""
        return ([r[0] for r in self.recent], [r[0] for r in self.positive], list(self.long))

    @classmethod
    def from_rows(cls, cfg: DataConfig, rec: dict[str, Any]) -> UserSequences:
        """Rebuild from feature values (None where the store has no row)."""
        s = cls.empty(cfg)

        def lst(name: str) -> list:
            v = rec.get(name)
            return [] if v is None else list(v)

        s.recent.extend(zip(lst("recent_video_ids"), lst("recent_watch_ratios"),
                            lst("recent_times_ms"), strict=False))
        s.positive.extend(zip(lst("positive_video_ids"), lst("positive_times_ms"), strict=False))
        s.long.extend(lst("long_video_ids"))
        last = rec.get("last_event_ms")
        s.last_ms = -1 if last is None else int(last)
        s.last_videos = set(lst("last_event_video_ids"))
        return s


@dataclass
class ApplyStats:
    """What one batch of events did."""

    applied: int = 0  # events appended
    skipped: int = 0  # replayed (at or before a user's watermark) or late events
    users: int = 0  # users whose sequences changed


class SequenceBook:
    """All users' sequences; `apply` consumes events and returns the rows that changed.

    `history_rows` (offline) collects one row per user per distinct event time and per view that
    changed, stamped newest event + 1 ms, which is what point-in-time joins need; plus, for a user
    seen for the first time, empty rows of every view stamped at the epoch. Feast 0.67's file
    (dask) offline store drops a training sample altogether when a view holds rows for its user
    but all after the sample's time; the epoch rows make "no history yet" an explicit empty row.
    Without `history_rows` it returns each changed user's final rows (what the online store needs).
    """

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.users: dict[int, UserSequences] = {}

    def get(self, user_id: int) -> UserSequences:
        s = self.users.get(user_id)
        if s is None:
            s = self.users[user_id] = UserSequences.empty(self.cfg)
        return s

    def seed_history(self, history: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
        """Start sequences from KuaiRand's pre-log history (user_id, last_time_ms, watch_seq,
        long_watch_seq, like_seq), like `onerec.stream`: shown videos seed recent (clicks are
        unknown before the log; watch ratio NaN) and long, long views and likes seed positive.
        Returns the seed rows, stamped last_time_ms + 1."""
        out: dict[str, list[dict[str, Any]]] = {v: [] for v in VIEWS}
        for row in history.itertuples(index=False):
            u, t = int(row.user_id), int(row.last_time_ms)
            s = self.get(u)
            s.seed([int(v) for v in row.watch_seq],
                   [int(v) for v in (*row.long_watch_seq, *row.like_seq)], t)
            for view, r in s.rows(u).items():
                out[view].append({**r, "stamp_ms": t + 1})
        return out

    def apply(self, events: pd.DataFrame, *, history_rows: bool = False,
              ) -> tuple[ApplyStats, dict[str, list[dict[str, Any]]]]:
        """Apply events in time order (a stable sort by time_ms). Returns stats and rows:
        every update per user if `history_rows`, else each changed user's latest rows."""
        ev = events.sort_values("time_ms", kind="stable") if len(events) and not \
            events["time_ms"].is_monotonic_increasing else events
        users = ev["user_id"].to_numpy(np.int64).tolist()
        videos = ev["video_id"].to_numpy(np.int64).tolist()
        times = ev["time_ms"].to_numpy(np.int64).tolist()
        click = ev["is_click"].to_numpy().astype(bool).tolist()
        positive = (ev["long_view"].to_numpy().astype(bool)
                    | ev["is_like"].to_numpy().astype(bool)).tolist()
        ratio = ev["watch_ratio"].to_numpy(np.float32).tolist()
        stats = ApplyStats()
        changed: dict[int, set[str]] = {}  # user -> views changed (latest mode)
        rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VIEWS}
        pending: dict[int, set[str]] = {}  # history mode: views changed at the user's last_ms
        for i in range(len(users)):
            u, v, t = users[i], videos[i], times[i]
            s = self.get(u)
            if not s.accepts(v, t):
                stats.skipped += 1
                continue
            if history_rows and s.last_ms < 0:  # a new user: empty rows stamped at the epoch
                self._emit(u, s, set(VIEWS), rows)
            if history_rows and u in pending and t > s.last_ms:
                self._emit(u, s, pending.pop(u), rows)
            s.observe(v, t, click=click[i], positive=positive[i], watch_ratio=ratio[i])
            views = {"user_long"}
            if click[i]:
                views.add("user_recent")
            if positive[i]:
                views.add("user_positive")
            stats.applied += 1
            target = pending if history_rows else changed
            target.setdefault(u, set()).update(views)
        if history_rows:
            for u, views in pending.items():
                self._emit(u, self.users[u], views, rows)
            stats.users = len({r["user_id"] for r in rows["user_long"]})
        else:
            for u, views in changed.items():
                self._emit(u, self.users[u], views, rows)
            stats.users = len(changed)
        return stats, rows

    @staticmethod
    def _emit(u: int, s: UserSequences, views: set[str],
              rows: dict[str, list[dict[str, Any]]]) -> None:
        all_rows = s.rows(u)
        for view in views:
            rows[view].append({**all_rows[view], "stamp_ms": s.last_ms + 1})


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows with `stamp_ms` -> a Feast frame with a UTC `event_timestamp` (ms resolution)."""
    df = pd.DataFrame(rows)
    df["event_timestamp"] = pd.to_datetime(df.pop("stamp_ms"), unit="ms", utc=True)
    return df
