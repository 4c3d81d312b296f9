"""KuaiRand-Pure (Gao et al., CIKM 2022): Kuaishou short-video impression logs.

Folder layout (the shipped sample in `data/kuairand-pure/` and the full copy in
`../shared/datasets/kuairand-pure/` share it):

    log_*.parquet                      impressions, time-ordered, one file per period
    video_features.parquet             7,583 videos: author, tag, duration, upload, statistics
    user_features.parquet | user_features_pure.csv   static user profile
    user_history_to_2022-04-24.parquet last 50 shown videos per user before the logs start

`read_tables` returns the tables as read (only renamed into schema names), which is what data
validation checks; `load` conforms them to `onerec.data.schema`. `prepare_sample` builds the
shipped sample from the shared copy, with the cleaning documented in data/kuairand-pure/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from onerec.data.schema import (
    EVENT_COLUMNS,
    EVENT_KEY,
    ITEM_COLUMNS,
    USER_COLUMNS,
    DataError,
    Dataset,
    conform,
)
from onerec.io import atomic_path

LOG_GLOB = "log_*.parquet"
ITEMS_FILE = "video_features.parquet"
USERS_FILES = ("user_features.parquet", "user_features_pure.csv")
HISTORY_GLOB = "user_history_*.parquet"

# Raw KuaiRand column -> schema name, per table.
ITEM_RENAMES = {"video_duration": "duration_ms"}

# Event columns the shipped sample keeps beyond the schema (the rest are joins of item columns).
EVENT_EXTRA = ("date", "hourmin", "tab", "is_forward", "is_hate", "is_profile_enter",
               "profile_stay_time", "comment_stay_time")


@dataclass
class RawTables:
    """Tables as read from disk, before validation and conforming.

    `log_schemas` keeps each log file's own columns and dtypes (file name -> column -> dtype):
    once the files are concatenated, a column renamed, dropped or retyped in one new file is
    only NaNs and an upcast dtype in the merged table, so data validation checks every file's
    schema from here and names the file (`onerec.validation.log_file_failures`).
    """

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    log_files: list[Path]
    log_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"cannot read {path} as parquet ({type(e).__name__}: {e})") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except Exception as e:
        raise DataError(f"cannot read {path} as CSV ({type(e).__name__}: {e})") from None


def log_files(data_dir: str | Path) -> list[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    files = sorted(data_dir.glob(LOG_GLOB))
    if not files:
        raise DataError(f"{data_dir}: no impression logs ({LOG_GLOB})")
    return files


def read_events(data_dir: str | Path, files: list[Path] | None = None) -> pd.DataFrame:
    """The impression logs as one time-ordered stream.

    Each log file is a time-ordered stream; consecutive files may overlap by a few hours (the
    exports cut days in local time), so time-ordered files are merged by a stable sort on
    `time_ms`. A file that is itself out of order is concatenated as is, so that data
    validation reports it instead of a sort hiding it.
    """
    files = files if files is not None else log_files(data_dir)
    return merge_logs([_read_parquet(f) for f in files])


def merge_logs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Log files (each time-ordered) -> one stream, as `read_events` documents."""
    if len(frames) == 1:
        return frames[0]
    events = pd.concat(frames, ignore_index=True)
    ordered = all("time_ms" in f.columns and f["time_ms"].is_monotonic_increasing for f in frames)
    if ordered:
        events = events.sort_values("time_ms", kind="stable", ignore_index=True)
    return events


def read_items(data_dir: str | Path) -> pd.DataFrame:
    return _read_parquet(Path(data_dir) / ITEMS_FILE).rename(columns=ITEM_RENAMES)


def read_users(data_dir: str | Path) -> pd.DataFrame:
    data_dir = Path(data_dir)
    for name in USERS_FILES:
        path = data_dir / name
        if path.exists():
            return _read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    raise DataError(f"missing file: {data_dir / USERS_FILES[0]} (or {USERS_FILES[1]})")


def read_tables(data_dir: str | Path) -> RawTables:
    """Every table of the folder as read (DataError naming the file when one cannot be read:
    missing, truncated, not parquet), with each log file's own schema beside the merged log."""
    files = log_files(data_dir)
    frames = [_read_parquet(f) for f in files]
    schemas = {f.name: dict(frame.dtypes.items()) for f, frame in zip(files, frames, strict=True)}
    return RawTables(events=merge_logs(frames), items=read_items(data_dir),
                     users=read_users(data_dir), log_files=files, log_schemas=schemas)


def read_history(data_dir: str | Path) -> pd.DataFrame | None:
    """Pre-log user histories (lifelong sequence seed), or None when the folder has none."""
    files = sorted(Path(data_dir).glob(HISTORY_GLOB))
    return _read_parquet(files[0]) if files else None


def conform_tables(raw: RawTables, name: str = "kuairand") -> Dataset:
    events = conform(raw.events, EVENT_COLUMNS, "events")
    items = conform(raw.items, ITEM_COLUMNS, "items", keep_extra=True)
    users = conform(raw.users, USER_COLUMNS, "users", keep_extra=True)
    return Dataset(name=name, events=events, items=items, users=users)


def load(data_dir: str | Path) -> Dataset:
    """Read and conform a KuaiRand folder (no validation: run `onerec.validation` for that)."""
    return conform_tables(read_tables(data_dir))


def clean_events(events: pd.DataFrame, seen: pd.DataFrame | None = None,
                 ) -> tuple[pd.DataFrame, dict[str, int]]:
    """The sample's cleaning rules. Returns the cleaned log and how many rows each rule dropped.

    1. Events whose video duration is unknown (logged as 0) are dropped: watch ratio and
       duration-aware rewards are undefined for them (0.7% of the raw log).
    2. Repeated (user, video, time) keys keep their first row: 92% of them are byte-identical
       copies of an export artefact, the rest differ only in derived columns (1.3%).
       Keys already in `seen` (the earlier log files: consecutive exports overlap) count too.
    """
    counts = {"input": len(events)}
    ev = events[events["duration_ms"].fillna(0) > 0]
    counts["dropped_unknown_duration"] = counts["input"] - len(ev)
    before = len(ev)
    ev = ev.drop_duplicates(list(EVENT_KEY), keep="first")
    if seen is not None and len(seen):
        key = list(EVENT_KEY)
        dup = ev[key].merge(seen[key].drop_duplicates(), on=key, how="left", indicator=True)
        ev = ev[(dup["_merge"] == "left_only").to_numpy()]
    counts["dropped_duplicate_key"] = before - len(ev)
    counts["output"] = len(ev)
    return ev.reset_index(drop=True), counts


def prepare_sample(src: str | Path, dst: str | Path) -> dict[str, dict[str, int]]:
    """Build the shipped sample (`data/kuairand-pure/`) from the shared KuaiRand-Pure copy."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, int]] = {}
    keep = list(EVENT_COLUMNS) + list(EVENT_EXTRA)
    seen: list[pd.DataFrame] = []
    for f in log_files(src):
        raw = _read_parquet(f)
        ev, counts = clean_events(raw, pd.concat(seen) if seen else None)
        seen.append(ev[list(EVENT_KEY)])
        ev = ev[[c for c in keep if c in ev.columns]]
        with atomic_path(dst / f.name, suffix=".parquet") as tmp:
            ev.to_parquet(tmp, index=False, compression="zstd")
        report[f.name] = counts
    with atomic_path(dst / ITEMS_FILE, suffix=".parquet") as tmp:
        _read_parquet(src / ITEMS_FILE).to_parquet(tmp, index=False, compression="zstd")
    with atomic_path(dst / USERS_FILES[0], suffix=".parquet") as tmp:
        read_users(src).to_parquet(tmp, index=False, compression="zstd")
    for f in sorted(src.glob(HISTORY_GLOB)):
        with atomic_path(dst / f.name, suffix=".parquet") as tmp:
            _read_parquet(f).to_parquet(tmp, index=False, compression="zstd")
    return report
