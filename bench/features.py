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
Medians over runs. Prints a rich table and the same table in Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.report import print_table
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

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["measure", "Feast (SQLite)", "baseline", "ratio", "baseline is"]


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


def main(argv: list[str] | None = None) -> list[list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backfill", type=int, default=20_000, help="events in the offline store")
    ap.add_argument("--stream", type=int, default=20_000, help="events pushed after that")
    ap.add_argument("--runs", type=int, default=5, help="runs (stream windows) per measure")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    console = Console()
    cfg = Config.from_preset("small", [f"features.repo_template={ROOT / 'feature_repo'}"])
    data_dir = ROOT / "data" / "kuairand-pure"
    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
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
                rows.append([f"online read, {batch} user(s), {name} (ms)", f"{f:.3f}",
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
        rows.append([f"stream writer, {len(windows[0])}-event windows (events/s)", f"{f:,.0f}",
                     f"{b:,.0f}", f"{b / f:.1f}x slower", "SequenceBook alone (no Feast)"])
        r = statistics.median(replay_rate)
        rows.append(["replay of the same windows (events/s)", f"{r:,.0f}", f"{f:,.0f}",
                     f"{r / f:.1f}x faster", "first pass (applied)"])
        console.print(f"streamed {applied} of {len(stream)} events (the rest at or before a "
                      f"user's watermark); replay applied 0")

    print_table(console, f"Feast features on KuaiRand-Pure (median of {args.runs} runs)",
                COLUMNS, rows, left=COLUMNS)
    return rows


if __name__ == "__main__":
    main()
