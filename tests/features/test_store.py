"""Feast feature repo: apply, materialize, push, replay, point-in-time training data.

One synthetic dataset (tiny preset: sequences cut at 8 / 8 / 16, so truncation is exercised):
the first 600 events are backfilled and materialized, the rest streamed through the writer.
Every expectation comes from `expected_context`, a plain-pandas rebuild of the contexts from
the raw log, independent of the writer's code. The same repo also runs on Redis (a loopback
redis-server, `local_redis`), where every user must read what SQLite gives.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("feast")

from onerec.config import Config, ConfigError
from onerec.data.schema import Dataset
from onerec.data.synthetic import make_dataset
from onerec.features import (
    FeaturesError,
    SequenceBook,
    StreamWriter,
    apply_repo,
    materialize_all,
    online_user_context,
    open_store,
    prepare_repo,
    serving_repo,
    training_features,
)
from onerec.features.sequences import COLUMNS, VIEWS

ROOT = Path(__file__).resolve().parents[2]
N_BACKFILL = 600


def expected_context(events: pd.DataFrame, user: int, before_ms: float, cfg: Config,
                     ) -> tuple[list[int], list[int], list[int]]:
    """(short, pos, long) video ids from events of `user` strictly before `before_ms`."""
    e = events[(events["user_id"] == user) & (events["time_ms"] < before_ms)]
    e = e.sort_values("time_ms", kind="stable")
    short = e.loc[e["is_click"] == 1, "video_id"].tolist()[-cfg.data.max_seq_len:]
    pos = e.loc[(e["long_view"] == 1) | (e["is_like"] == 1), "video_id"].tolist()
    return short, pos[-cfg.data.max_pos_seq_len:], e["video_id"].tolist()[-cfg.data.max_long_seq_len:]


def parts(repo: Path) -> list[Path]:
    return sorted((repo / "data" / "offline").rglob("*.parquet"))


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.from_preset("tiny", [f"features.repo_template={ROOT / 'feature_repo'}"])


@pytest.fixture(scope="module")
def ds(cfg: Config) -> Dataset:
    return make_dataset(cfg.data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, cfg: Config, ds: Dataset) -> dict:
    """Backfill + apply + materialize the first events, then stream the rest."""
    repo = tmp_path_factory.mktemp("features") / "repo"
    head = Dataset("synthetic", ds.events.iloc[:N_BACKFILL], ds.items, ds.users)
    prepare_repo(repo, cfg, head)
    store = apply_repo(repo)
    materialize_all(store)
    users = sorted(ds.events["user_id"].unique().tolist())
    materialized = online_user_context(store, users)
    stats = StreamWriter(store, cfg).consume_all(ds.events.iloc[N_BACKFILL:], batch_events=150)
    return {"repo": repo, "store": store, "users": users, "materialized": materialized,
            "stream_stats": stats}


def test_feast_apply_registers_the_repo_in_a_fresh_directory(tmp_path, cfg, ds):
    repo = tmp_path / "fresh"
    prepare_repo(repo, cfg, Dataset("synthetic", ds.events.iloc[:50], ds.items, ds.users))
    feast = Path(sys.executable).with_name("feast")
    run = subprocess.run([str(feast), "-c", str(repo), "apply"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    listed = subprocess.run([str(feast), "-c", str(repo), "feature-services", "list"],
                            capture_output=True, text=True, timeout=120)
    assert {"onerec_v1", "onerec_v2", "video_v1"} <= set(listed.stdout.split())
    assert (repo / "data" / "registry.db").is_file()
    assert (repo / "data" / "online_store.db").is_file()


def test_materialized_online_contexts_match_the_log(world, cfg, ds):
    head = ds.events.iloc[:N_BACKFILL]
    for u in world["users"]:
        assert world["materialized"][u] == expected_context(head, u, np.inf, cfg), u
    assert any(len(c[2]) == cfg.data.max_long_seq_len for c in world["materialized"].values())


def test_serving_repo_loads_the_same_online_rows_as_materialize(world, tmp_path, cfg, ds):
    """The sequences written from the backfill's final state (what the demo's server reads)
    are the rows `materialize` loads from the offline store, every stored column included."""
    head = Dataset("synthetic", ds.events.iloc[:N_BACKFILL], ds.items, ds.users)
    phases: list[dict] = []
    store, took = serving_repo(tmp_path / "serving", cfg, head, log=phases.append)
    assert phases == [{"step": 0, "phase": "prepare"}, {"step": 1, "phase": "apply"},
                      {"step": 2, "phase": "materialize"}, {"step": 3, "phase": "sequences"},
                      {"step": 4}]  # what the demo's progress row shows
    assert took["users"] == len(set(head.events["user_id"])) and took["materialize_s"] >= 0
    assert online_user_context(store, world["users"]) == world["materialized"]
    feats = [f"{v}:{c}" for v in VIEWS for c in COLUMNS[v]] + ["user_profile:fans_user_num"]
    users = {"user_id": world["users"]}
    again = prepare_repo(tmp_path / "materialized", cfg, head)
    full = apply_repo(again)
    materialize_all(full)
    assert (store.get_online_features(features=feats, entity_rows=users).to_dict()
            == full.get_online_features(features=feats, entity_rows=users).to_dict())


def test_pushed_events_are_read_back_online(world, cfg, ds):
    assert world["stream_stats"].applied == len(ds.events) - N_BACKFILL
    ctx = online_user_context(world["store"], world["users"])
    changed = 0
    for u in world["users"]:
        assert ctx[u] == expected_context(ds.events, u, np.inf, cfg), u
        changed += ctx[u] != world["materialized"][u]
    assert changed > 0


def test_replaying_the_log_changes_nothing_online_or_offline(world, cfg, ds):
    before_ctx = online_user_context(world["store"], world["users"])
    before_parts = parts(world["repo"])
    replay = StreamWriter(world["store"], cfg)  # a restarted writer: state from the store
    stats = replay.consume_all(ds.events)
    assert (stats.applied, stats.skipped) == (0, len(ds.events))
    assert online_user_context(world["store"], world["users"]) == before_ctx
    assert parts(world["repo"]) == before_parts


def test_duplicate_events_in_one_batch_are_applied_once(cfg, ds):
    ev = ds.events.iloc[:200]
    once, twice = SequenceBook(cfg.data), SequenceBook(cfg.data)
    once.apply(ev)
    stats, _ = twice.apply(pd.concat([ev, ev.iloc[::-1]]))
    assert stats.skipped == len(ev)
    assert {u: s.rows(u) for u, s in twice.users.items()} == \
        {u: s.rows(u) for u, s in once.users.items()}


def test_training_features_see_only_events_before_the_sample_time(world, cfg, ds):
    # samples inside the backfilled period, where the offline store holds later rows too
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(np.arange(100, len(ds.events)), size=30, replace=False))
    samples = ds.events.iloc[idx][["user_id", "time_ms"]].reset_index(drop=True)
    got = training_features(world["store"], samples, "v2")
    assert got["time_ms"].tolist() == samples["time_ms"].tolist()
    for i, row in samples.iterrows():
        short, pos, long = expected_context(ds.events, row.user_id, row.time_ms, cfg)
        assert got.at[i, "recent_video_ids"] == short, i
        assert got.at[i, "positive_video_ids"] == pos, i
        assert got.at[i, "long_video_ids"] == long, i
        times = got.at[i, "recent_times_ms"]
        assert all(t < row.time_ms for t in times)
    # one millisecond later the sample's own event is visible: the boundary is exact
    later = training_features(world["store"], samples.assign(time_ms=samples["time_ms"] + 1))
    for i, row in samples.iterrows():
        assert later.at[i, "long_video_ids"] == \
            expected_context(ds.events, row.user_id, row.time_ms + 1, cfg)[2]
    assert (later["long_video_ids"] != got["long_video_ids"]).any()


def test_unknown_user_gets_empty_sequences(world):
    assert online_user_context(world["store"], [10**9]) == {10**9: ([], [], [])}
    known = world["users"][0]
    got = training_features(world["store"], pd.DataFrame({"user_id": [10**9, known],
                                                          "time_ms": [2_000_000_000_000] * 2}))
    assert got["user_id"].tolist() == [10**9, known]
    assert got.at[0, "long_video_ids"] == [] and got.at[0, "recent_video_ids"] == []
    assert len(got.at[1, "long_video_ids"]) > 0


def test_unknown_service_version_is_a_features_error(world):
    with pytest.raises(FeaturesError, match="onerec_v9"):
        training_features(world["store"], pd.DataFrame({"user_id": [0], "time_ms": [0]}), "v9")


@pytest.mark.parametrize(("overrides", "key"), [
    (["features.service_version=latest"], "features.service_version"),
    (["features.online_path=/abs/online.db"], "features.online_path"),
    (["features.push_batch_events=0"], "features.push_batch_events"),
    (["features.online_store=memcached"], "features.online_store"),
    (["features.online_store=redis", "features.redis_connection=db=1"],
     "features.redis_connection"),
])
def test_bad_features_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        Config.from_preset("tiny", overrides)


def test_cli_group_reads_a_user(world):
    import typer
    from typer.testing import CliRunner

    from onerec.app.features_cli import register

    app = typer.Typer()
    register(app)
    user = world["users"][0]
    ok = CliRunner().invoke(app, ["features", "get", "--preset", "tiny", "--repo",
                                  str(world["repo"]), "--user", str(user)])
    assert ok.exit_code == 0, ok.output
    assert str(user) in ok.output


def test_training_and_serving_read_the_same_context_id_for_id(world, cfg, ds):
    """Train/serve parity: the context a training request is built from (`onerec.stream`)
    equals, item for item, what serving makes of the same user's online rows (Feast, after the
    same events) with the same catalogue, also where the catalogue lacks some videos (new
    uploads before a codebook refresh): both keep the bounded window of raw video ids and drop
    the unknown ones when reading it."""
    from onerec.stream import requests_from_events
    from serving.transformer import compact, pad_lists

    videos = sorted(ds.items["video_id"].tolist())
    known = [v for i, v in enumerate(videos) if i % 5]  # a fifth of the videos unknown
    index = {v: i + 1 for i, v in enumerate(known)}
    state: dict[int, tuple[list[int], list[int], list[int]]] = {}
    requests_from_events(ds.events, index, cfg.data, final_state=state)
    online = online_user_context(world["store"], world["users"])
    widths = (cfg.data.max_seq_len, cfg.data.max_pos_seq_len, cfg.data.max_long_seq_len)
    dropped = 0
    for u in world["users"]:
        for k, width in enumerate(widths):
            raw = pad_lists([online[u][k]])
            ids = np.where(raw >= 0, np.vectorize(lambda v: index.get(int(v), 0))(raw), 0)
            served = compact(ids, width)[0]
            served = served[served > 0].tolist()
            assert state.get(u, ([], [], []))[k] == served, (u, k)
            dropped += len(online[u][k]) - len(served)
    assert dropped > 0  # the unknown videos were in the windows, and both sides dropped them


SHIPPED = ROOT / "data" / "kuairand-pure"
CUT = "2022-04-27"  # the demo's first held-out day: the gate asks for each user's context here


@pytest.fixture(scope="module")
def shipped_cut(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shipped KuaiRand sample up to the cut, served the way `make demo` serves it: the
    repo backfilled from the log (seeded with the pre-log history), applied, the online store
    loaded (`serving_repo`)."""
    from onerec.data import kuairand
    from onerec.stages import day_ms

    cfg = Config.from_preset("small", [f"features.repo_template={ROOT / 'feature_repo'}"])
    data = kuairand.load(SHIPPED)
    history = kuairand.read_history(SHIPPED)
    cut = day_ms(CUT)
    before = Dataset(data.name, data.events[data.events["time_ms"] < cut], data.items, data.users)
    store, _ = serving_repo(tmp_path_factory.mktemp("shipped") / "repo", cfg, before,
                            history=history)
    return {"cfg": cfg, "data": data, "history": history, "before": before, "store": store}


def test_on_the_shipped_sample_every_user_trains_on_the_context_feast_serves(shipped_cut):
    """Train/serve parity on the shipped data, for every user at the cut: the context of a
    training request at the cut (`onerec.stream`, the gate's and the trainer's builder) equals,
    id for id, what the server makes of the user's Feast online rows (the transformer's
    `pad_lists` -> item indices -> `compact`), with a tenth of the videos unknown to the
    catalogue (new uploads before a codebook refresh)."""
    from onerec.stream import requests_from_events
    from serving.transformer import compact, pad_lists

    cfg, data, history = shipped_cut["cfg"], shipped_cut["data"], shipped_cut["history"]
    before = shipped_cut["before"]
    videos = sorted(data.items["video_id"].tolist())
    index = {v: i + 1 for i, v in enumerate(v for j, v in enumerate(videos) if j % 10)}
    state: dict[int, tuple[list[int], list[int], list[int]]] = {}
    requests_from_events(before.events, index, cfg.data, history=history, final_state=state)
    users = sorted(set(before.events["user_id"].tolist()) | set(history["user_id"].tolist()))
    online = online_user_context(shipped_cut["store"], users)
    widths = (cfg.data.max_seq_len, cfg.data.max_pos_seq_len, cfg.data.max_long_seq_len)
    lookup = np.vectorize(lambda v: index.get(int(v), 0), otypes=[np.int64])
    served_items = dropped = 0
    for k, width in enumerate(widths):
        raw = pad_lists([online[u][k] for u in users])
        ids = np.where(raw >= 0, lookup(raw), 0) if raw.size else raw
        served = compact(ids, width)
        for row, u in zip(served, users, strict=True):
            trained = state.get(u, ([], [], []))[k]
            assert trained == row[row > 0].tolist(), (u, ["short", "pos", "long"][k])
            served_items += len(trained)
        dropped += sum(len(online[u][k]) for u in users) - int((served > 0).sum())
    # every user of the sample (26,556) with 1.5 M context items between them
    assert len(users) > 25_000 and served_items > 1_000_000
    assert dropped > 0  # unknown videos were in the windows, and both sides dropped them


# -- the same repo on Redis, production's online store ------------------------------------------
# One loopback redis-server for the session (`local_redis`, tests/conftest.py); each repo here
# takes its own numbered database, so the project's keys never meet.
STORED = [f"{v}:{c}" for v in VIEWS for c in COLUMNS[v]] + [
    "user_profile:user_active_degree", "user_profile:fans_user_num"]


def redis_cfg(connection: str) -> Config:
    return Config.from_preset("tiny", [f"features.repo_template={ROOT / 'feature_repo'}",
                                       "features.online_store=redis",
                                       f"features.redis_connection={connection}"])


def online_rows(store, users: list[int]) -> dict:
    return store.get_online_features(features=STORED, entity_rows={"user_id": users}).to_dict()


def redis_keys(connection: str) -> int:
    import redis

    host, port, db = connection.replace(",db=", ":").split(":")
    with redis.Redis(host=host, port=int(port), db=int(db)) as client:
        return int(client.dbsize())


@pytest.fixture(scope="module")
def redis_world(tmp_path_factory: pytest.TempPathFactory, local_redis, ds: Dataset) -> dict:
    """`world` on Redis: the same backfill applied and materialized, the same events streamed."""
    connection = local_redis.connection_string(1)
    cfg = redis_cfg(connection)
    repo = tmp_path_factory.mktemp("features-redis") / "repo"
    prepare_repo(repo, cfg, Dataset("synthetic", ds.events.iloc[:N_BACKFILL], ds.items, ds.users))
    store = apply_repo(repo)
    materialize_all(store)
    users = sorted(ds.events["user_id"].unique().tolist())
    materialized = online_user_context(store, users)
    stats = StreamWriter(store, cfg).consume_all(ds.events.iloc[N_BACKFILL:], batch_events=150)
    return {"repo": repo, "store": store, "cfg": cfg, "connection": connection, "users": users,
            "materialized": materialized, "stream_stats": stats}


def test_the_online_store_is_rendered_from_the_config(tmp_path):
    import yaml

    from onerec.features.store import render_store_yaml

    template = ROOT / "feature_repo" / "feature_store.yaml"
    sqlite = yaml.safe_load(render_store_yaml(Config.from_preset("tiny"), template))
    assert sqlite["online_store"] == {"type": "sqlite", "path": "data/online_store.db"}
    redis = yaml.safe_load(render_store_yaml(redis_cfg("10.0.0.7:6380,db=4"), template))
    assert redis["online_store"] == {"type": "redis", "connection_string": "10.0.0.7:6380,db=4"}
    assert redis["offline_store"] == sqlite["offline_store"] and redis["project"] == "onerec"


def test_redis_reads_what_sqlite_reads_after_materialize_and_push(world, redis_world, cfg, ds):
    """Parity: the same repo, backfill and stream on SQLite and on Redis give every user the
    same online values, column for column, and both are the contexts of the raw log."""
    users = redis_world["users"]
    assert redis_world["materialized"] == world["materialized"]
    assert redis_world["stream_stats"] == world["stream_stats"]
    sqlite_rows = online_rows(world["store"], [*users, 10**9])
    redis_rows = online_rows(redis_world["store"], [*users, 10**9])
    assert redis_rows == sqlite_rows
    assert redis_rows["long_video_ids"][-1] is None  # the unknown user, on both
    ctx = online_user_context(redis_world["store"], users)
    for u in users:
        assert ctx[u] == expected_context(ds.events, u, np.inf, cfg), u
    # it really is Redis: one hash per user and per video there, no SQLite file in the repo
    assert redis_keys(redis_world["connection"]) == len(users) + len(ds.items)
    assert not (redis_world["repo"] / "data" / "online_store.db").exists()


def test_a_restarted_writer_on_redis_replays_nothing(redis_world, ds):
    before = online_user_context(redis_world["store"], redis_world["users"])
    replay = StreamWriter(redis_world["store"], redis_world["cfg"])  # state read from Redis
    stats = replay.consume_all(ds.events)
    assert (stats.applied, stats.skipped) == (0, len(ds.events))
    assert online_user_context(redis_world["store"], redis_world["users"]) == before


def test_serving_repo_on_redis_holds_the_rows_of_serving_repo_on_sqlite(tmp_path, local_redis,
                                                                        cfg, ds):
    """The demo server's load path (`write_sequences` + materialize of profiles and videos)
    writes the same online rows to Redis as to SQLite, videos included."""
    head = Dataset("synthetic", ds.events.iloc[:N_BACKFILL], ds.items, ds.users)
    on_sqlite, _ = serving_repo(tmp_path / "sqlite", cfg, head)
    on_redis, took = serving_repo(tmp_path / "redis", redis_cfg(local_redis.connection_string(2)),
                                  head)
    users = sorted(set(head.events["user_id"].tolist()))
    assert took["users"] == len(users)
    assert online_rows(on_redis, users) == online_rows(on_sqlite, users)
    videos = {"video_id": ds.items["video_id"].tolist()}
    feats = ["video_features:tag", "video_features:duration_ms", "video_features:author_id"]
    assert (on_redis.get_online_features(features=feats, entity_rows=videos).to_dict()
            == on_sqlite.get_online_features(features=feats, entity_rows=videos).to_dict())


def test_an_unreachable_redis_is_an_error_naming_its_connection_string(tmp_path, ds):
    from onerec.features.redis_server import free_port

    connection = f"127.0.0.1:{free_port()},db=0"  # nothing listens there
    repo = prepare_repo(tmp_path / "repo", redis_cfg(connection),
                        Dataset("synthetic", ds.events.iloc[:50], ds.items, ds.users))
    with pytest.raises(FeaturesError, match=re.escape(f"'{connection}' is unreachable")):
        apply_repo(repo)
    with pytest.raises(FeaturesError, match=r"set features\.redis_connection"):
        open_store(repo)
    # the server's way in: no check, an unreachable store is its outage to report and retry
    assert open_store(repo, check=False).config.online_store.connection_string == connection
