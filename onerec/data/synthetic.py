"""A seeded synthetic generator of the event schema, for fast tests.

Users have latent tastes over tags; videos have a tag, an author, a duration and a quality.
Click, long view, like, follow and comment are drawn from that affinity with KuaiRand-like base
rates (click ~0.45, long view ~0.3, like ~0.02), so models have a real signal to learn and the
validation suites see realistic values. Same seed, same data, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from onerec.config import DataConfig
from onerec.data.schema import DAY_MS, EVENT_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset
from onerec.io import atomic_path

N_TAGS = 12
START_MS = 1_650_800_000_000  # 2022-04-24, like KuaiRand


def make_dataset(cfg: DataConfig | None = None, *, n_users: int | None = None,
                 n_items: int | None = None, n_events: int | None = None, days: int = 7,
                 seed: int | None = None) -> Dataset:
    cfg = cfg or DataConfig()
    n_users = n_users or cfg.synthetic_users
    n_items = n_items or cfg.synthetic_items
    n_events = n_events or cfg.synthetic_events
    rng = np.random.default_rng(cfg.seed if seed is None else seed)

    # items
    item_tag = rng.integers(0, N_TAGS, n_items)
    quality = rng.normal(0.0, 0.5, n_items)
    duration = rng.lognormal(np.log(60_000), 0.8, n_items).clip(3_000, 600_000).round()
    items = pd.DataFrame({
        "video_id": np.arange(n_items, dtype=np.int64),
        "author_id": rng.integers(0, max(2, n_items // 4), n_items).astype(np.int64),
        "tag": pd.array([str(t) for t in item_tag], dtype="string"),
        "duration_ms": duration.astype(np.float64),
        "upload_type": pd.array(rng.choice(["Web", "LongImport", "ShortImport"], n_items),
                                dtype="string"),
        "upload_date": (20220401 + rng.integers(0, 20, n_items)).astype(np.int64),
    })

    # users
    taste = rng.dirichlet(np.full(N_TAGS, 0.3), n_users)
    users = pd.DataFrame({
        "user_id": np.arange(n_users, dtype=np.int64),
        "user_active_degree": pd.array(rng.choice(["full_active", "high_active", "middle_active"],
                                                  n_users), dtype="string"),
        "is_video_author": rng.integers(0, 2, n_users).astype(np.int8),
        "follow_user_num": rng.integers(0, 500, n_users).astype(np.int64),
        "fans_user_num": rng.integers(0, 1000, n_users).astype(np.int64),
        "friend_user_num": rng.integers(0, 50, n_users).astype(np.int64),
        "register_days": rng.integers(14, 3000, n_users).astype(np.int64),
    })

    # events: each user browses; exposure is biased toward their tastes (the old system)
    user = rng.integers(0, n_users, n_events)
    tag_pref = taste[user]  # (n_events, N_TAGS)
    chosen_tag = (tag_pref.cumsum(1) > rng.random((n_events, 1))).argmax(1)
    by_tag = [np.flatnonzero(item_tag == t) for t in range(N_TAGS)]
    video = np.array([rng.choice(by_tag[t]) if len(by_tag[t]) else rng.integers(0, n_items)
                      for t in chosen_tag], dtype=np.int64)
    affinity = 3.0 * taste[user, item_tag[video]] + quality[video]
    p_click = 1 / (1 + np.exp(-(affinity - 0.6)))
    click = rng.random(n_events) < p_click
    watch_ratio = np.where(click, rng.gamma(1.5, 0.35, n_events) * np.exp(0.5 * affinity),
                           rng.gamma(1.0, 0.03, n_events)).clip(0, 5)
    long_view = (watch_ratio > 0.6) & click
    like = click & (rng.random(n_events) < 0.05 * np.exp(affinity))
    follow = like & (rng.random(n_events) < 0.1)
    comment = click & (rng.random(n_events) < 0.008 * np.exp(affinity))
    dur = duration[video].astype(np.int64)
    times = np.sort(START_MS + rng.integers(0, days * DAY_MS, n_events))
    events = pd.DataFrame({
        "user_id": user.astype(np.int64),
        "video_id": video,
        "time_ms": times.astype(np.int64),
        "is_click": click.astype(np.int8),
        "long_view": long_view.astype(np.int8),
        "is_like": like.astype(np.int8),
        "is_follow": follow.astype(np.int8),
        "is_comment": comment.astype(np.int8),
        "play_time_ms": (watch_ratio * dur).round().astype(np.int64),
        "duration_ms": dur,
        "watch_ratio": watch_ratio.astype(np.float32),
    }).drop_duplicates(["user_id", "video_id", "time_ms"]).reset_index(drop=True)
    assert list(events.columns) == list(EVENT_COLUMNS)  # nosec B101 # internal invariant
    assert list(items.columns) == list(ITEM_COLUMNS)  # nosec B101 # internal invariant
    assert list(users.columns) == list(USER_COLUMNS)  # nosec B101 # internal invariant
    return Dataset(name="synthetic", events=events, items=items, users=users)


def write_folder(ds: Dataset, data_dir: str | Path, n_logs: int = 2) -> Path:
    """Write a dataset in the KuaiRand folder layout, the events split into `n_logs` files."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(ds.events)), max(1, n_logs))
    for i, idx in enumerate(chunks):
        with atomic_path(data_dir / f"log_part{i:02d}.parquet", suffix=".parquet") as tmp:
            ds.events.iloc[idx].to_parquet(tmp, index=False)
    with atomic_path(data_dir / "video_features.parquet", suffix=".parquet") as tmp:
        ds.items.rename(columns={"duration_ms": "video_duration"}).to_parquet(tmp, index=False)
    with atomic_path(data_dir / "user_features.parquet", suffix=".parquet") as tmp:
        ds.users.to_parquet(tmp, index=False)
    return data_dir
