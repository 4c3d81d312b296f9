"""The Feast side: render a repo into a run folder, apply it, write, read online and offline.

- `prepare_repo` renders `feature_repo/` (definitions, .feastignore, feature_store.yaml with
  Config.features' project, paths and online store: the SQLite file, or Redis at
  features.redis_connection) into a folder and writes the offline parquet there:
  profiles, video features, and the sequence history of the events given (one row per user per
  update). Built under a temporary name and swapped in, so a failed run leaves the old folder.
- `apply_repo` registers the definitions (what `feast apply` does, in-process: the definitions
  are loaded from the rendered file under a private module name, so two repos in one process
  never share a cached module), `materialize_all` loads the newest rows into the online store.
- `serving_repo` does all three for a server: the sequence views' online rows are written from
  the backfill's final state (`write_sequences`, Feast's `write_to_online_store`) instead of
  Feast's `materialize`, whose file offline store (dask) pickles every list cell to tokenize
  the frames: 48 s for the three sequence views of the 26,633 KuaiRand users on 2 cores, 8 s
  written directly; the same rows either way (the newest per user).
- `StreamWriter` is the streaming path: events -> `SequenceBook` -> a parquet part per batch in
  the offline store and one `push` per view to the online store.
- `online_user_context` is the one function serving reads; `training_features` is the
  point-in-time join for training samples.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from onerec.config import Config
from onerec.data.schema import Dataset
from onerec.features.sequences import (
    COLUMNS,
    PUSH_SOURCES,
    VIEWS,
    ApplyStats,
    SequenceBook,
    UserSequences,
    rows_frame,
)
from onerec.io import atomic_dir, atomic_path

OFFLINE = Path("data") / "offline"  # as in feature_repo/definitions.py
REPO_FILES = ("definitions.py", ".feastignore")
CONTEXT_FEATURES = ("user_recent:recent_video_ids", "user_positive:positive_video_ids",
                    "user_long:long_video_ids")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_TS = pa.timestamp("ms", tz="UTC")
_I64L, _F32L = pa.list_(pa.int64()), pa.list_(pa.float32())
SCHEMAS: dict[str, pa.Schema] = {
    "user_recent": pa.schema([("user_id", pa.int64()), ("event_timestamp", _TS),
                              ("recent_video_ids", _I64L), ("recent_watch_ratios", _F32L),
                              ("recent_times_ms", _I64L)]),
    "user_positive": pa.schema([("user_id", pa.int64()), ("event_timestamp", _TS),
                                ("positive_video_ids", _I64L), ("positive_times_ms", _I64L)]),
    "user_long": pa.schema([("user_id", pa.int64()), ("event_timestamp", _TS),
                            ("long_video_ids", _I64L), ("last_event_ms", pa.int64()),
                            ("last_event_video_ids", _I64L)]),
    "user_profile": pa.schema([("user_id", pa.int64()), ("event_timestamp", _TS),
                               ("user_active_degree", pa.string()),
                               ("is_video_author", pa.int64()), ("follow_user_num", pa.int64()),
                               ("fans_user_num", pa.int64()), ("friend_user_num", pa.int64()),
                               ("register_days", pa.int64())]),
    "video_features": pa.schema([("video_id", pa.int64()), ("event_timestamp", _TS),
                                 ("semantic_ids", _I64L), ("tag", pa.string()),
                                 ("duration_ms", pa.int64()), ("upload_time_ms", pa.int64()),
                                 ("author_id", pa.int64())]),
}


class FeaturesError(RuntimeError):
    """The feature repo is missing, not applied, or asked for something it does not define."""


# -- offline parquet -----------------------------------------------------------------------------
def write_part(repo: Path, view: str, df: pd.DataFrame, tag: str = "") -> Path | None:
    """Add one parquet part to a source folder (atomic). Empty frames write nothing."""
    if len(df) == 0:
        return None
    folder = Path(repo) / OFFLINE / view
    name = f"part-{tag or 'stream'}-{uuid.uuid4().hex[:12]}.parquet"
    table = pa.Table.from_pandas(df[SCHEMAS[view].names], schema=SCHEMAS[view],
                                 preserve_index=False)
    with atomic_path(folder / name, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return folder / name


def _write_empty(repo: Path, view: str) -> None:
    """A zero-row part, so every source folder is readable before its first write."""
    folder = Path(repo) / OFFLINE / view
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(SCHEMAS[view].empty_table(), folder / "part-empty.parquet")


def profile_frame(users: pd.DataFrame) -> pd.DataFrame:
    """Static user features, valid from the epoch (they describe the user, not an event)."""
    df = users[[n for n in SCHEMAS["user_profile"].names if n != "event_timestamp"]].copy()
    df["user_active_degree"] = df["user_active_degree"].astype(str)
    df["event_timestamp"] = EPOCH
    return df


def video_frame(items: pd.DataFrame, codebook: Any = None) -> pd.DataFrame:
    """Video side features stamped at upload; semantic IDs from `codebook` ([] when absent)."""
    ids = items["video_id"].to_numpy(np.int64)
    upload = pd.to_datetime(items["upload_date"].astype(str), format="%Y%m%d", errors="coerce",
                            utc=True).fillna(pd.Timestamp(EPOCH))
    sids: list[list[int]] = [[] for _ in ids]
    if codebook is not None:
        known = np.isin(ids, codebook.item_ids)
        codes = codebook.semantic_ids_of(ids[known]).tolist()
        for i, c in zip(np.flatnonzero(known).tolist(), codes, strict=True):
            sids[i] = [int(x) for x in c]
    return pd.DataFrame({
        "video_id": ids, "event_timestamp": upload, "semantic_ids": sids,
        "tag": items["tag"].astype(str).to_numpy(),
        "duration_ms": items["duration_ms"].fillna(0).to_numpy().astype(np.int64),
        "upload_time_ms": (upload.astype("int64") // 1_000_000).to_numpy(),
        "author_id": items["author_id"].to_numpy(np.int64),
    })


# -- the repo ------------------------------------------------------------------------------------
def render_store_yaml(cfg: Config, template: Path) -> str:
    """The template's feature_store.yaml with Config.features' project, registry and online
    store: features.online_store "sqlite" (the embedded file at online_path) or "redis" (a
    server at redis_connection, as production's feature_repo/production/feature_store.yaml)."""
    d = yaml.safe_load(template.read_text())
    f = cfg.features
    d["project"] = f.project
    d["registry"] = f.registry_path
    if f.online_store == "redis":
        d["online_store"] = {"type": "redis", "connection_string": f.redis_connection}
    else:
        d["online_store"] = {**d.get("online_store", {}), "type": "sqlite",
                             "path": f.online_path}
    header = "# Rendered by onerec.features.prepare_repo from Config.features; edit the config.\n"
    return header + yaml.safe_dump(d, sort_keys=False)


def prepare_repo(dest: str | Path, cfg: Config, data: Dataset, *,
                 history: pd.DataFrame | None = None, codebook: Any = None) -> Path:
    """Render the feature repo into `dest` with its offline store backfilled from `data`.

    Sequences replay `data.events` (seeded with `history` when given and
    features.seed_history is on); `codebook` (a `Codebook`) fills the videos' semantic IDs.
    Returns `dest`, ready for `apply_repo`.
    """
    _prepare(dest, cfg, data, history, codebook)
    return Path(dest)


def _prepare(dest: str | Path, cfg: Config, data: Dataset, history: pd.DataFrame | None,
             codebook: Any) -> SequenceBook:
    """`prepare_repo`; -> the sequences as of the data's end (what the online store holds)."""
    template = Path(cfg.features.repo_template)
    if not template.is_absolute() and not template.is_dir():  # run from outside the checkout
        template = Path(__file__).resolve().parents[2] / template
    if not (template / "definitions.py").is_file():
        raise FeaturesError(f"features.repo_template: {template} has no definitions.py")
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        for name in REPO_FILES:
            shutil.copy2(template / name, tmp / name)
        (tmp / "feature_store.yaml").write_text(
            render_store_yaml(cfg, template / "feature_store.yaml"))
        (tmp / "data").mkdir()
        for view in SCHEMAS:
            _write_empty(tmp, view)
        write_part(tmp, "user_profile", profile_frame(data.users), "profile")
        write_part(tmp, "video_features", video_frame(data.items, codebook), "videos")
        book = SequenceBook(cfg.data)
        if history is not None and cfg.features.seed_history:
            for view, rows in book.seed_history(history).items():
                if rows:
                    write_part(tmp, view, rows_frame(rows), "history")
        _, rows = book.apply(data.events, history_rows=True)
        for view in VIEWS:
            if rows[view]:
                write_part(tmp, view, rows_frame(rows[view]), "backfill")
    return book


def _definitions(repo: Path) -> list[Any]:
    """The Feast objects of repo/definitions.py, loaded under a name private to this repo."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    path = Path(repo) / "definitions.py"
    if not path.is_file():
        raise FeaturesError(f"{repo}: no definitions.py (run prepare_repo first)")
    name = f"_onerec_feature_repo_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # nosec B101 # type narrowing
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop(name, None)
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    return [v for v in vars(module).values() if isinstance(v, kinds)]


def open_store(repo: str | Path, *, check: bool = True) -> Any:
    """A FeatureStore on a rendered repo folder.

    `check`: PING a Redis online store first (`check_online_store`), so the commands, pipeline
    steps and benchmarks stop at once with the connection string in the error. The server
    passes False: there a store that does not answer is an outage it reports and retries
    (serving/online.py), not a start-up failure.
    """
    from feast import FeatureStore

    repo = Path(repo)
    if not (repo / "feature_store.yaml").is_file():
        raise FeaturesError(f"{repo}: no feature_store.yaml (run `onerec features apply`)")
    store = FeatureStore(repo_path=str(repo))
    if check:
        check_online_store(store)
    return store


def check_online_store(store: Any, timeout_s: float = 3.0) -> None:
    """Fail early, naming the connection string, when a Redis online store does not answer.

    Feast connects lazily, so an unreachable Redis would otherwise surface as a bare
    ConnectionError from deep inside the first apply, write or read. Other online stores (the
    SQLite file, a remote feature server) are not checked here.
    """
    online = store.config.online_store
    # sentinel and cluster deployments are Feast's to reach; a single server is checked
    if getattr(online, "type", None) != "redis" or online.redis_type != "redis":
        return
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    nodes, params = RedisOnlineStore._parse_connection_string(online.connection_string)
    if not nodes or "host" not in nodes[0] or "port" not in nodes[0]:
        raise FeaturesError(f"{store.repo_path}: Redis connection_string "
                            f"{online.connection_string!r} does not start with host:port")
    # one retry at once: redis-py's default (3 with backoff) makes a refused port a 9 s wait
    client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params,
                         socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                         retry=Retry(NoBackoff(), 1))
    try:
        client.ping()
    except redis.RedisError as e:
        raise FeaturesError(f"{store.repo_path}: the Redis online store at "
                            f"{online.connection_string!r} is unreachable ({e}); start Redis "
                            "there or set features.redis_connection") from None
    finally:
        client.close()


def apply_repo(repo: str | Path) -> Any:
    """Register the repo's definitions and create the online tables (`feast apply`)."""
    store = open_store(repo)
    store.apply(_definitions(Path(repo)))
    return store


def materialize_all(store: Any, end: datetime | None = None,
                    views: list[str] | None = None) -> None:
    """Load each key's newest offline row (up to `end`, default now) into the online store
    (of `views`, default every feature view)."""
    store.materialize(start_date=EPOCH, end_date=end or datetime.now(timezone.utc),
                      feature_views=views)


def write_sequences(store: Any, book: SequenceBook) -> int:
    """Every user's sequences in `book` into the online store (each view's newest row, stamped
    newest event + 1 ms, as `materialize` would load it from the backfill). -> users written."""
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VIEWS}
    for user, seqs in book.users.items():
        for view, row in seqs.rows(user).items():
            rows[view].append({**row, "stamp_ms": seqs.last_ms + 1})
    for view in VIEWS:
        if rows[view]:
            df = rows_frame(rows[view])
            store.write_to_online_store(view, df[["user_id", "event_timestamp",
                                                  *COLUMNS[view]]])
    return len(book.users)


SERVING_PHASES = ("prepare", "apply", "materialize", "sequences")


def serving_repo(dest: str | Path, cfg: Config, data: Dataset, *,
                 history: pd.DataFrame | None = None, codebook: Any = None,
                 log: Callable[[dict[str, Any]], None] | None = None,
                 ) -> tuple[Any, dict[str, Any]]:
    """A feature repo a server reads, as of the end of `data`: the offline store backfilled
    (`prepare_repo`), applied, and the online store loaded: the sequence views from the
    backfill's final state (`write_sequences`), the user and video views by `materialize`.
    `log({"step": phases done, "phase": the one starting})` before each of SERVING_PHASES,
    `log({"step": 4})` after the last.
    -> (store, {"prepare_s", "apply_s", "materialize_s", "users"})."""
    def phase(i: int) -> None:
        if log is not None:
            log({"step": i, **({"phase": SERVING_PHASES[i]} if i < len(SERVING_PHASES) else {})})

    t0 = time.perf_counter()
    phase(0)
    book = _prepare(dest, cfg, data, history, codebook)
    t1 = time.perf_counter()
    phase(1)
    store = apply_repo(dest)
    t2 = time.perf_counter()
    end = (datetime.fromtimestamp((int(data.events["time_ms"].max()) + 1) / 1000, timezone.utc)
           if len(data.events) else None)
    phase(2)
    materialize_all(store, end, ["user_profile", "video_features"])
    phase(3)
    users = write_sequences(store, book)
    phase(4)
    t3 = time.perf_counter()
    return store, {"prepare_s": round(t1 - t0, 1), "apply_s": round(t2 - t1, 1),
                   "materialize_s": round(t3 - t2, 1), "users": users}


# -- streaming -----------------------------------------------------------------------------------
class StreamWriter:
    """Consumes impression events in time order; pushes the changed sequences online and
    appends their per-update rows to the offline store.

    Users are loaded from the online store the first time the writer sees them, so a restarted
    writer continues from the stored sequences and watermark (and skips what they contain).
    """

    def __init__(self, store: Any, cfg: Config, *, offline: bool = True) -> None:
        self.store = store
        self.cfg = cfg
        self.offline = offline
        self.repo = Path(store.repo_path)
        self.book = SequenceBook(cfg.data)

    def _load_users(self, user_ids: list[int]) -> None:
        new = [u for u in dict.fromkeys(user_ids) if u not in self.book.users]
        if not new:
            return
        feats = [f"{view}:{col}" for view in VIEWS for col in COLUMNS[view]]
        got = self.store.get_online_features(features=feats,
                                             entity_rows={"user_id": new}).to_dict()
        for i, u in enumerate(new):
            rec = {k: got[k][i] for k in got if k != "user_id"}
            self.book.users[u] = UserSequences.from_rows(self.cfg.data, rec)

    def consume(self, events: pd.DataFrame) -> ApplyStats:
        """Apply one batch of events (any order; sorted by time here) and write the results."""
        if len(events) == 0:
            return ApplyStats()
        self._load_users(events["user_id"].to_numpy(np.int64).tolist())
        stats, rows = self.book.apply(events, history_rows=self.offline)
        for view in VIEWS:
            if not rows[view]:
                continue
            df = rows_frame(rows[view])
            if self.offline:
                write_part(self.repo, view, df)
                df = df.drop_duplicates("user_id", keep="last")
            self.store.push(PUSH_SOURCES[view], df[["user_id", "event_timestamp",
                                                    *COLUMNS[view]]])
        return stats

    def consume_all(self, events: pd.DataFrame, batch_events: int | None = None) -> ApplyStats:
        """`consume` in batches of features.push_batch_events, in time order."""
        n = batch_events or self.cfg.features.push_batch_events
        ev = events.sort_values("time_ms", kind="stable", ignore_index=True)
        total = ApplyStats()
        for start in range(0, len(ev), n):
            s = self.consume(ev.iloc[start:start + n])
            total.applied += s.applied
            total.skipped += s.skipped
            total.users += s.users
        return total


# -- reading -------------------------------------------------------------------------------------
def _as_list(v: Any) -> list:
    return [] if v is None or (isinstance(v, float) and np.isnan(v)) else [x for x in v]


def online_user_context(store: Any, user_ids: list[int],
                        ) -> dict[int, tuple[list[int], list[int], list[int]]]:
    """Each user's (short, pos, long) video ids, oldest first, as the model's contexts.

    short = recently clicked, pos = long-viewed or liked, long = recently shown (lengths bounded
    by data.max_seq_len / max_pos_seq_len / max_long_seq_len at write time). An unknown user
    gets three empty lists.
    """
    ids = [int(u) for u in user_ids]
    if not ids:
        return {}
    got = store.get_online_features(features=list(CONTEXT_FEATURES),
                                     entity_rows={"user_id": ids}).to_dict()
    short, pos, long = (got[f.split(":")[1]] for f in CONTEXT_FEATURES)
    return {u: ([int(x) for x in _as_list(short[i])], [int(x) for x in _as_list(pos[i])],
                [int(x) for x in _as_list(long[i])]) for i, u in enumerate(ids)}


def feature_service(store: Any, version: str) -> Any:
    """The FeatureService of a model version (`onerec_<version>`), or FeaturesError."""
    name = f"onerec_{version}"
    try:
        return store.get_feature_service(name)
    except Exception as e:  # feast raises FeatureServiceNotFoundException
        raise FeaturesError(f"features.service_version: no FeatureService {name} in "
                            f"{store.repo_path} ({type(e).__name__})") from None


def _users_with_rows(repo: Path) -> set[int]:
    """Users the offline store has sequences for (every one has rows in all three views)."""
    table = pq.read_table(Path(repo) / OFFLINE / "user_long", columns=["user_id"])
    return set(table.column("user_id").to_numpy().tolist())


def training_features(store: Any, samples: pd.DataFrame, version: str = "v1") -> pd.DataFrame:
    """Point-in-time user features for training samples (columns user_id, time_ms, others kept).

    Each sample gets, per view, the newest row stamped at or before its time_ms; rows are
    stamped 1 ms after their newest event, so only events strictly before time_ms count.
    Array features come back as lists ([] where the user had no row yet), in sample order.
    Users the offline store has never seen skip the join (Feast's dask join fails on a view
    without a single match) and get empty lists and nulls.
    """
    service = feature_service(store, version)
    entity = samples.copy()
    entity["event_timestamp"] = pd.to_datetime(entity["time_ms"], unit="ms", utc=True)
    entity["_row"] = np.arange(len(entity))
    known = entity["user_id"].isin(_users_with_rows(Path(store.repo_path))).to_numpy()
    names = [f.name for p in service.feature_view_projections for f in p.features]
    frames = []
    if known.any():
        frames.append(store.get_historical_features(entity_df=entity[known],
                                                    features=service).to_df())
    if not known.all():
        frames.append(entity[~known].assign(**{n: None for n in names}))
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    out = out.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    for col in names:
        if col.endswith(("_ids", "_ratios", "_times_ms")):
            out[col] = [_as_list(v) for v in out[col]]
    return out
