"""Feature-store benchmark: online read latency and stream-writer throughput on KuaiRand-Pure.

    python -m bench.features [--backfill 20000] [--stream 20000] [--runs 5]

On the shipped sample (218,876 impressions, 25,120 users; sequences seeded with the pre-log
history, lengths of the `small` preset: 50 / 50 / 256): renders the repo into a temporary
folder with the first `--backfill` events in the offline store, applies it and materializes
it (timed once). Then:
- online reads: `online_user_context` (one `get_online_features` over the three sequence
  views, SQLite) for 1 and for 100 random users, p50 and p99 per run over 200 / 50 reads; the
  baseline reads the same users from a Python dict holding the same contexts in memory;
- stream writer: the next `--stream` events in `--runs` consecutive windows, one `consume`
  each (online push + offline parquet part), events/s per window; the baseline applies the same
  windows to a `SequenceBook` alone (the sequence logic without Feast);
- replay: the same windows again through a restarted writer (every event skipped).

Then the online store at production size, on Redis (production's store: Debian's redis-server,
started on loopback by `onerec.features.redis_server.LocalRedis`, installed first when missing
and this is root) against SQLite at the same size in the same run: a repo per store with
`--users` users (default 1,000,000) in the three sequence views, written with Feast's
`write_to_online_store` in `--write-batch` batches (timed: rows/s and seconds); each user's
rows are those of a sample user (the sample's sequences after the backfill, cycled over the
ids). Then `online_user_context` for 1 and 100 random users of the million (p50 / p99 as
above), and push throughput: `--pushes` pushes per run of `--push-users` users' rows to each
of the three views (what one `StreamWriter.consume` sends), rows/s. `--stores sqlite` or
`--users 0` leaves parts out. Medians over runs. Prints a rich table (load average in its
title) and the same table in Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from bench.report import csv_of, print_table
from onerec.config import Config
from onerec.data import kuairand
from onerec.data.schema import Dataset
from onerec.features import (
    SequenceBook,
    StreamWriter,
    apply_repo,
    materialize_all,
    online_user_context,
    prepare_repo,
)
from onerec.features.redis_server import LocalRedis, find_redis_server
from onerec.features.sequences import COLUMNS as VIEW_COLUMNS
from onerec.features.sequences import PUSH_SOURCES, VIEWS, rows_frame

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["measure", "Feast", "baseline", "ratio", "baseline is"]


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def read_latency(fn, users: np.ndarray, batch: int, reads: int, rng) -> tuple[float, float]:
    times = []
    for _ in range(reads):
        ids = rng.choice(users, size=batch, replace=False).tolist()
        t0 = time.perf_counter()
        fn(ids)
        times.append(time.perf_counter() - t0)
    return percentiles(times)


def sample_rows(args: argparse.Namespace, console: Console, cfg: Config, ds: Dataset,
                history, tmp: Path) -> list[list[str]]:
    """The shipped sample on SQLite: reads against a dict, the stream writer against the
    sequence logic alone, a replay against the first pass."""
    rows: list[list[str]] = []
    repo = tmp / "repo"
    t0 = time.perf_counter()
    prepare_repo(repo, cfg, Dataset("kuairand", ds.events.iloc[:args.backfill], ds.items,
                                    ds.users), history=history)
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = apply_repo(repo)
    t_apply = time.perf_counter() - t0
    t0 = time.perf_counter()
    materialize_all(store)
    t_mat = time.perf_counter() - t0
    console.print(f"prepare_repo (history + {args.backfill} events) {t_prep:.1f}s, apply "
                  f"{t_apply:.1f}s, materialize {t_mat:.1f}s")

    # online reads
    users = np.asarray(sorted(set(history["user_id"].tolist())), dtype=np.int64)
    memory = online_user_context(store, users.tolist())  # the same contexts, in a dict
    online_user_context(store, users[:100].tolist())  # warm the registry cache
    for batch, reads in ((1, 200), (100, 50)):
        feast_runs, dict_runs = [], []
        for r in range(args.runs):
            feast_runs.append(read_latency(lambda ids: online_user_context(store, ids),
                                           users, batch, reads, np.random.default_rng(r)))
            dict_runs.append(read_latency(
                lambda ids: {u: memory.get(u, ([], [], [])) for u in ids},
                users, batch, reads, np.random.default_rng(r)))
        for k, name in ((0, "p50"), (1, "p99")):
            f = statistics.median(x[k] for x in feast_runs)
            d = statistics.median(x[k] for x in dict_runs)
            rows.append([f"SQLite, sample: online read, {batch} user(s), {name} (ms)", f"{f:.3f}",
                         f"{d:.4f}", f"{f / d:,.0f}x", "Python dict in memory"])

    # stream writer
    stream = ds.events.iloc[args.backfill:args.backfill + args.stream]
    windows = np.array_split(np.arange(len(stream)), args.runs)
    writer = StreamWriter(store, cfg)
    feast_rate, book_rate, replay_rate, applied = [], [], [], 0
    for idx in windows:
        w = stream.iloc[idx]
        t0 = time.perf_counter()
        stats = writer.consume(w)
        feast_rate.append(len(w) / (time.perf_counter() - t0))
        applied += stats.applied
    # baseline: the same windows, state preloaded like the writer's (outside the timing)
    base = SequenceBook(cfg.data)
    base.seed_history(history)
    base.apply(ds.events.iloc[:args.backfill])
    for idx in windows:
        w = stream.iloc[idx]
        t0 = time.perf_counter()
        base.apply(w, history_rows=True)
        book_rate.append(len(w) / (time.perf_counter() - t0))
    replay = StreamWriter(store, cfg)
    for idx in windows:
        w = stream.iloc[idx]
        t0 = time.perf_counter()
        s = replay.consume(w)
        replay_rate.append(len(w) / (time.perf_counter() - t0))
        assert s.applied == 0, "replay applied events: idempotence broken"  # nosec B101
    f, b = statistics.median(feast_rate), statistics.median(book_rate)
    rows.append([f"SQLite, sample: stream writer, {len(windows[0])}-event windows (events/s)", f"{f:,.0f}",
                 f"{b:,.0f}", f"{b / f:.1f}x slower", "SequenceBook alone (no Feast)"])
    r = statistics.median(replay_rate)
    rows.append(["SQLite, sample: replay of the same windows (events/s)", f"{r:,.0f}", f"{f:,.0f}",
                 f"{r / f:.1f}x faster", "first pass (applied)"])
    console.print(f"streamed {applied} of {len(stream)} events (the rest at or before a "
                  f"user's watermark); replay applied 0")

    return rows


def sequence_templates(cfg: Config, ds: Dataset, history, backfill: int,
                       ) -> dict[str, pd.DataFrame]:
    """Each view's online row for every sample user after the backfill (what `write_sequences`
    writes): real sequence lengths to cycle over the million ids."""
    book = SequenceBook(cfg.data)
    book.seed_history(history)
    book.apply(ds.events.iloc[:backfill])
    rows: dict[str, list[dict]] = {v: [] for v in VIEWS}
    for user, seqs in book.users.items():
        for view, row in seqs.rows(user).items():
            rows[view].append({**row, "stamp_ms": seqs.last_ms + 1})
    return {v: rows_frame(rows[v]) for v in VIEWS}


def view_frame(templates: dict[str, pd.DataFrame], view: str, ids: np.ndarray,
               stamp: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rows of `view` for users `ids`, each a sample user's row (cycled), stamped `stamp` (or
    the sample's stamp)."""
    t = templates[view]
    df = t.iloc[ids % len(t)].reset_index(drop=True)
    df["user_id"] = ids
    if stamp is not None:
        df["event_timestamp"] = stamp
    return df[["user_id", "event_timestamp", *VIEW_COLUMNS[view]]]


def store_at_size(kind: str, connection: str, args: argparse.Namespace, console: Console,
                  ds: Dataset, templates: dict[str, pd.DataFrame], tmp: Path) -> dict:
    """One store with `args.users` users: load time, read percentiles, push rate, and the
    contexts of a few probe users (to check the stores hold the same)."""
    cfg = Config.from_preset("small", [f"features.repo_template={ROOT / 'feature_repo'}",
                                       f"features.online_store={kind}",
                                       f"features.redis_connection={connection}"])
    repo = prepare_repo(tmp / f"at-size-{kind}", cfg,
                        Dataset("kuairand", ds.events.iloc[:0], ds.items, ds.users))
    store = apply_repo(repo)
    n = args.users
    t0 = time.perf_counter()
    for start in range(0, n, args.write_batch):
        ids = np.arange(start, min(start + args.write_batch, n), dtype=np.int64)
        for view in VIEWS:
            store.write_to_online_store(view, view_frame(templates, view, ids))
    load_s = time.perf_counter() - t0
    console.print(f"{kind}: {n:,} users x {len(VIEWS)} views written in {load_s:.1f}s "
                  f"({n * len(VIEWS) / load_s:,.0f} rows/s); load average "
                  f"{tuple(round(x, 2) for x in os.getloadavg())}")
    users = np.arange(n, dtype=np.int64)
    online_user_context(store, users[:100].tolist())  # warm the registry cache
    reads = {}
    for batch, count in ((1, 200), (100, 50)):
        runs = [read_latency(lambda ids: online_user_context(store, ids), users, batch, count,
                             np.random.default_rng(r)) for r in range(args.runs)]
        for k in (0, 1):
            reads[batch, k] = statistics.median(x[k] for x in runs)
    probe = np.random.default_rng(99).choice(users, size=100, replace=False).tolist()
    contexts = online_user_context(store, probe)
    # pushes: fresh users each, stamped now and later (Redis skips a row not newer than its own)
    rng = np.random.default_rng(7)
    chosen = rng.choice(users, size=args.runs * args.pushes * args.push_users, replace=False)
    now = pd.Timestamp.now(tz="UTC")
    rates = []
    for r in range(args.runs):
        frames = []
        for i in range(args.pushes):
            k = r * args.pushes + i
            ids = chosen[k * args.push_users:(k + 1) * args.push_users]
            stamp = now + pd.Timedelta(milliseconds=k + 1)
            frames.append({v: view_frame(templates, v, ids, stamp) for v in VIEWS})
        t0 = time.perf_counter()
        for f in frames:
            for view in VIEWS:
                store.push(PUSH_SOURCES[view], f[view])
        rates.append(args.pushes * args.push_users * len(VIEWS) / (time.perf_counter() - t0))
    return {"load_s": load_s, "reads": reads, "push": statistics.median(rates),
            "contexts": contexts}


def at_size_rows(args: argparse.Namespace, console: Console, cfg: Config, ds: Dataset,
                 history, tmp: Path) -> list[list[str]]:
    """Rows of each of `args.stores` after the first, with `args.users` users, against the
    first (SQLite by default) at the same size."""
    stores = list(args.stores)
    server = None
    if "redis" in stores:
        binary = find_redis_server(install=True)
        if binary is None:
            console.print("redis-server is not installed and could not be (root + apt-get): "
                          "no Redis rows")
            stores.remove("redis")
        else:
            server = LocalRedis(binary).start()
    try:
        templates = sequence_templates(cfg, ds, history, args.backfill)
        console.print(f"{args.users:,} users, each with the rows of one of "
                      f"{len(templates['user_long']):,} sample users")
        got = {kind: store_at_size(kind, server.connection_string(0) if server else "",
                                   args, console, ds, templates, tmp) for kind in stores}
    finally:
        if server is not None:
            server.stop()
    base, n, rows = stores[0], args.users, []
    for kind in stores[1:]:
        if got[kind]["contexts"] != got[base]["contexts"]:
            raise RuntimeError(f"{kind} and {base} read different contexts for the same users")
    label = {"sqlite": "SQLite", "redis": "Redis"}
    for kind in stores[1:] or stores:  # a lone store is its own baseline
        g, b = got[kind], got[base]
        name, vs = f"{label.get(kind, kind)}, {n:,} users", f"{label.get(base, base)}, {n:,} users"
        for batch in (1, 100):
            for k, pct in ((0, "p50"), (1, "p99")):
                rows.append([f"{name}: online read, {batch} user(s), {pct} (ms)",
                             f"{g['reads'][batch, k]:.3f}", f"{b['reads'][batch, k]:.3f}",
                             f"{g['reads'][batch, k] / b['reads'][batch, k]:.2f}x", vs])
        rows.append([f"{name}: push, {args.push_users:,} users x {len(VIEWS)} views (rows/s)",
                     f"{g['push']:,.0f}", f"{b['push']:,.0f}", f"{g['push'] / b['push']:.2f}x",
                     vs])
        rate = lambda d: n * len(VIEWS) / d["load_s"]  # noqa: E731
        rows.append([f"{name}: load by write_to_online_store, {args.write_batch:,}-user "
                     f"batches (rows/s; s)", f"{rate(g):,.0f}; {g['load_s']:.0f} s",
                     f"{rate(b):,.0f}; {b['load_s']:.0f} s", f"{rate(g) / rate(b):.2f}x", vs])
    return rows

def main(argv: list[str] | None = None) -> list[list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backfill", type=int, default=20_000, help="events in the offline store")
    ap.add_argument("--stream", type=int, default=20_000, help="events pushed after that")
    ap.add_argument("--runs", type=int, default=5, help="runs (stream windows) per measure")
    ap.add_argument("--no-sample", action="store_true", help="skip the sample's SQLite rows")
    ap.add_argument("--users", type=int, default=1_000_000,
                    help="users in each store at production size (0: skip that part)")
    ap.add_argument("--stores", type=csv_of(str), default=["sqlite", "redis"],
                    help="online stores at that size, the first is the baseline")
    ap.add_argument("--write-batch", type=int, default=50_000,
                    help="users per write_to_online_store call while loading")
    ap.add_argument("--push-users", type=int, default=1_000, help="users per push")
    ap.add_argument("--pushes", type=int, default=10, help="pushes per run")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    console = Console()
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    console.print(f"load average {load_before}, {os.cpu_count()} CPUs")
    cfg = Config.from_preset("small", [f"features.repo_template={ROOT / 'feature_repo'}"])
    data_dir = ROOT / "data" / "kuairand-pure"
    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sample:
            rows += sample_rows(args, console, cfg, ds, history, Path(tmp))
        if args.users > 0 and args.stores:
            rows += at_size_rows(args, console, cfg, ds, history, Path(tmp))
    load = tuple(round(x, 2) for x in os.getloadavg())
    print_table(console, f"Feast features on KuaiRand-Pure (median of {args.runs} runs; load "
                f"average {load_before} before, {load} after)", COLUMNS, rows, left=COLUMNS)
    return rows


if __name__ == "__main__":
    main()
