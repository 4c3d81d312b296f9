"""Offline evaluation: full-ranking Recall/NDCG, catalogue coverage, KuaiRand temporal split.

Design choices:
- Metrics take ranked id lists, not model scores, so every recommender (SASRec, popularity,
  the generative model's beam search) is scored by the same few lines. Ranking is *full*: the
  caller ranks the whole catalogue (or generates), nothing is sampled, as in TIGER (Table 1).
- Single target per row (Amazon Beauty leave-one-out): recall@k is 1 if the target is in the
  top k, and NDCG@k = 1 / log2(rank + 2) for the target's 0-based rank < k (the ideal DCG is 1).
- Several targets per row (KuaiRand: a user has several positive test events):
  recall@k = |targets in top k| / min(k, |targets|), so a perfect list scores 1 even when the
  user has more positives than k fit (the "R-precision style" normalisation used by most
  implicit-feedback benchmarks; plain |hits| / |targets| would cap it at k / |targets|).
  NDCG@k = DCG@k / IDCG@k with binary gains, IDCG@k = sum over the first min(k, |targets|)
  ranks. Rows with no targets are skipped (they carry no information).
- Duplicates in a ranked list count once (the first occurrence); a generator that repeats an
  item is not rewarded twice.
- The temporal split cuts at a UTC day boundary, so test days are whole days of traffic, like
  a production model trained up to midnight and evaluated on the following days.
- `legality` (the share of generated semantic IDs that map to a real item) is measured by the
  generator; `EvalReport` only carries it beside the ranking metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.data.schema import DAY_MS, DataError
from onerec.io import atomic_path

POSITIVE_FLAGS: tuple[str, ...] = ("long_view", "is_like")  # what counts as a positive test event


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) <= 0:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _first_ranks(ranked: Sequence[int], limit: int) -> dict[int, int]:
    """Item -> 0-based rank of its first occurrence among the first `limit` *distinct* items."""
    ranks: dict[int, int] = {}
    for item in ranked:
        if len(ranks) >= limit:
            break
        item = int(item)
        if item not in ranks:
            ranks[item] = len(ranks)
    return ranks


def rank_metrics(ranked: Sequence[Sequence[int]], targets: Sequence[int],
                 ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Recall@k and NDCG@k with one relevant item per row, averaged over rows.

    ranked: one list of item ids per row, best first; targets: the one relevant item per row.
    Returns {"recall@5": ..., "ndcg@5": ..., "recall@10": ..., ...}.
    """
    ks = _check_ks(ks)
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists but {len(targets)} targets")
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    kmax = max(ks)
    for row, target in zip(ranked, targets, strict=True):
        rank = _first_ranks(row, kmax).get(int(target))
        if rank is None:
            continue
        for k in ks:
            if rank < k:
                sums[f"recall@{k}"] += 1.0
                sums[f"ndcg@{k}"] += 1.0 / math.log2(rank + 2)
    n = max(len(targets), 1)
    return {key: v / n for key, v in sums.items()}


def rank_metrics_multi(ranked: Sequence[Sequence[int]], target_sets: Sequence[Iterable[int]],
                       ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Recall@k and NDCG@k with several relevant items per row (see the module docstring).

    recall@k = |hits in top k| / min(k, |targets|); ndcg@k = DCG@k / ideal DCG@k, binary gains.
    Rows whose target set is empty are skipped; the average is over the remaining rows.
    """
    ks = _check_ks(ks)
    if len(ranked) != len(target_sets):
        raise ValueError(f"{len(ranked)} ranked lists but {len(target_sets)} target sets")
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    kmax = max(ks)
    n = 0
    for row, tset in zip(ranked, target_sets, strict=True):
        tset = {int(t) for t in tset}
        if not tset:
            continue
        n += 1
        hit_ranks = sorted(r for item, r in _first_ranks(row, kmax).items() if item in tset)
        for k in ks:
            hits = [r for r in hit_ranks if r < k]
            ideal = min(k, len(tset))
            sums[f"recall@{k}"] += len(hits) / ideal
            dcg = sum(1.0 / math.log2(r + 2) for r in hits)
            idcg = sum(1.0 / math.log2(r + 2) for r in range(ideal))
            sums[f"ndcg@{k}"] += dcg / idcg
    return {key: v / max(n, 1) for key, v in sums.items()}


def coverage(ranked: Sequence[Sequence[int]], n_items: int, k: int) -> float:
    """Share of the catalogue (`n_items` items) that appears in at least one row's top k."""
    if n_items <= 0 or k <= 0:
        raise ValueError(f"n_items and k must be > 0, got n_items={n_items}, k={k}")
    seen: set[int] = set()
    for row in ranked:
        seen.update(_first_ranks(row, k))
    return len(seen) / n_items


@dataclass
class EvalReport:
    """What the evaluation gate compares: ranking metrics plus whatever else was measured."""

    metrics: dict[str, float]  # "recall@10", "ndcg@10", ...
    n_users: int  # rows the metrics average over
    legality: float | None = None  # share of generated IDs that are real items (generator's)
    coverage: float | None = None  # share of the catalogue in anyone's top k
    extras: dict[str, Any] = field(default_factory=dict)  # anything else (timings, model name)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"metrics": dict(self.metrics), "n_users": self.n_users}
        if self.legality is not None:
            d["legality"] = self.legality
        if self.coverage is not None:
            d["coverage"] = self.coverage
        d["extras"] = dict(self.extras)
        return d


# -- KuaiRand: temporal split and positive targets ----------------------------------------------
def temporal_split(events: pd.DataFrame, test_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on events before the cut, test on events from it on.

    The cut is the start (UTC midnight) of the day `test_days` days before the last event's
    day, so test_days=1 holds out the last day. With test_days=0 everything is training data.
    """
    if test_days < 0:
        raise ValueError(f"test_days must be >= 0, got {test_days}")
    if "time_ms" not in events.columns:
        raise DataError("events: missing column 'time_ms'")
    if events.empty or test_days == 0:
        return events.copy(), events.iloc[:0].copy()
    last_day = int(events["time_ms"].max()) // DAY_MS
    cut = (last_day - test_days + 1) * DAY_MS
    is_test = events["time_ms"].to_numpy() >= cut
    return events[~is_test].copy(), events[is_test].copy()


def split_cut_ms(events: pd.DataFrame, test_days: int) -> int:
    """The cut `temporal_split` uses, in epoch milliseconds (for logs and reports)."""
    last_day = int(events["time_ms"].max()) // DAY_MS
    return (last_day - test_days + 1) * DAY_MS


def test_targets(test_events: pd.DataFrame) -> dict[int, list[int]]:
    """User -> videos of their positive test events (long view or like), in time order, unique."""
    missing = [c for c in ("user_id", "video_id", "time_ms", *POSITIVE_FLAGS)
               if c not in test_events.columns]
    if missing:
        raise DataError(f"test events: missing column {missing[0]!r}")
    pos = (test_events["long_view"] == 1) | (test_events["is_like"] == 1)
    ev = test_events.loc[pos, ["user_id", "video_id", "time_ms"]]
    ev = ev.sort_values(["user_id", "time_ms"], kind="stable")
    ev = ev.drop_duplicates(["user_id", "video_id"], keep="first")
    return {int(u): [int(v) for v in g["video_id"]] for u, g in ev.groupby("user_id", sort=True)}


# Not a pytest test, despite the name.
test_targets.__test__ = False  # type: ignore[attr-defined]


# -- recommendation dumps -----------------------------------------------------------------------
def dump_recs(path: str | Path, rows: Iterable[dict[str, Any] | tuple[Any, Any, Sequence[int]]]
              ) -> Path:
    """Write one JSON object per line, {"user": ..., "target": ..., "recs": [...]}, atomically.

    rows: dicts with those keys, or (user, target, recs) tuples. `target` may be one id or a list.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            if not isinstance(row, dict):
                user, target, recs = row
                row = {"user": user, "target": target, "recs": recs}
            f.write(json.dumps({"user": _plain(row["user"]), "target": _plain(row["target"]),
                                "recs": [int(r) for r in row["recs"]]}) + "\n")
    return path


def read_recs(path: str | Path) -> list[dict[str, Any]]:
    """Read back what `dump_recs` wrote."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(v: Any) -> Any:
    """numpy scalars and tuples -> JSON-native values."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class only."""
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
