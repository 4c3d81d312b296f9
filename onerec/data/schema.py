"""One event schema for impression logs, and the item and user tables beside it.

Every loader (KuaiRand-Pure, the synthetic generator; Amazon Beauty and MicroLens map into
sequences) produces these columns with these dtypes, so nothing downstream knows which dataset
it reads. The names follow KuaiRand, the mission's own domain (Kuaishou short-video logs).

Raw tables are validated *before* they are conformed (see `onerec.validation`): a dropped or
mistyped column is reported by the data-validation suite with its name, and `conform` raises
`DataError` naming the column if anything slips past.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A data file is missing, unreadable, or does not have the schema it must have."""


# One day in the unit of `time_ms` (epoch milliseconds): day windows, splits, freshness.
DAY_MS = 86_400_000

# Feedback signals, all 0/1 flags.
FEEDBACK_FLAGS: tuple[str, ...] = ("is_click", "long_view", "is_like", "is_follow", "is_comment")

# Impression log: one row per video shown to a user.
EVENT_COLUMNS: dict[str, str] = {
    "user_id": "int64",  # who saw it
    "video_id": "int64",  # what was shown
    "time_ms": "int64",  # when (epoch milliseconds); logs are in time order
    "is_click": "int8",  # clicked / played
    "long_view": "int8",  # watched long (KuaiRand's definition)
    "is_like": "int8",  # liked
    "is_follow": "int8",  # followed the author
    "is_comment": "int8",  # commented
    "play_time_ms": "int64",  # watch time
    "duration_ms": "int64",  # video duration (> 0)
    "watch_ratio": "float32",  # play_time / duration (>= 0; > 1 when looped)
}
EVENT_KEY: tuple[str, ...] = ("user_id", "video_id", "time_ms")

# Item (video) table: ids, side features for content embeddings, freshness.
ITEM_COLUMNS: dict[str, str] = {
    "video_id": "int64",  # primary key
    "author_id": "int64",  # uploader
    "tag": "string",  # category ids, comma-joined when several ("unknown" when none)
    "duration_ms": "float64",  # video duration; NaN when unknown
    "upload_type": "string",  # upload channel (Web, LongImport, ...)
    "upload_date": "int64",  # YYYYMMDD
}

# User table: static profile features.
USER_COLUMNS: dict[str, str] = {
    "user_id": "int64",  # primary key
    "user_active_degree": "string",  # activity bucket
    "is_video_author": "int8",  # 0/1
    "follow_user_num": "int64",  # >= 0
    "fans_user_num": "int64",  # >= 0
    "friend_user_num": "int64",  # >= 0
    "register_days": "int64",  # >= 0
}


@dataclass
class Dataset:
    """Events, items and users of one dataset, conformed to the schemas above."""

    name: str
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    @property
    def n_events(self) -> int:
        return len(self.events)

    def summary(self) -> dict[str, float | int | str]:
        ev = self.events
        return {
            "dataset": self.name,
            "events": len(ev),
            "users": int(ev["user_id"].nunique()),
            "videos_shown": int(ev["video_id"].nunique()),
            "videos_in_catalogue": len(self.items),
            "click_rate": round(float(ev["is_click"].mean()), 4) if len(ev) else 0.0,
            "long_view_rate": round(float(ev["long_view"].mean()), 4) if len(ev) else 0.0,
            "first_time_ms": int(ev["time_ms"].min()) if len(ev) else 0,
            "last_time_ms": int(ev["time_ms"].max()) if len(ev) else 0,
        }


def conform(df: pd.DataFrame, columns: dict[str, str], table: str,
            keep_extra: bool = False) -> pd.DataFrame:
    """Select `columns` from `df` and cast them, raising DataError naming the column at fault."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{table}: missing column(s) {missing}; expected {list(columns)}")
    out = {}
    for col, dtype in columns.items():
        s = df[col]
        if dtype.startswith(("int", "float")) and s.isna().any() and not dtype.startswith("float"):
            n = int(s.isna().sum())
            raise DataError(f"{table}.{col}: {n} null value(s) in a non-nullable {dtype} column")
        try:
            out[col] = s.astype(dtype) if dtype != "string" else s.astype("string").fillna("")
        except (TypeError, ValueError) as e:
            raise DataError(f"{table}.{col}: cannot cast to {dtype}: {e}") from None
    result = pd.DataFrame(out, index=df.index)
    if keep_extra:
        extra = [c for c in df.columns if c not in columns]
        result = pd.concat([result, df[extra]], axis=1)
    return result.reset_index(drop=True)


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: np.array([], dtype=t) for c, t in EVENT_COLUMNS.items()})
