"""The validate stage's data work in one streaming pass over the event log, in bounded memory.

`onerec.stages.validate` used to read the whole log into one DataFrame (`read_tables`), cut the
batch (events after the production watermark, before `until`) and hand it to the GX suites: its
peak memory grew with the log. `scan_log` reads the log as `onerec.data.eventlog.iter_events`
chunks (the same rows in the same order) and does every part of that work incrementally:

- counts of the training and held-out windows, the batch's fingerprint (sha256 fed chunk by
  chunk: the same digest as over the whole batch), its row count, click rate, newest event and
  first-tag counts: exact.
- the ``events`` GX suite runs on consecutive chunks of the batch of about `chunk_rows` events
  and the per-chunk results are merged per expectation (`ResultMerge`): row-level expectations
  add their unexpected rows, the row-count and newest-event expectations are decided on the
  whole batch. Chunks are cut where `time_ms` changes, so a repeated (user, video, time) key,
  which has one `time_ms`, never spans two chunks: the uniqueness check is exact on a
  time-ordered log; the time-order check is carried across chunk boundaries. (On a log that is
  out of order the time-order expectation fails, which stops the stage anyway; duplicates are
  then only found within a chunk.) Each chunk is one validation result in the Data Docs.
- the ``drift`` suite and the reference's watch-ratio quantiles need whole columns, so they use
  a uniform random sample of at most `sample_rows` batch events (bottom-k of seeded random
  keys, kept in log order). A batch no larger than that is the sample: the results are then
  identical to validating the batch in memory. Beyond it, the click rate and tag share that
  drift compares are sampled with standard errors of about 0.001, against limits of 0.05.

Nothing here holds more than a chunk, the sample and one decoded batch per log file, whatever
the log's size (`bench.scale` measures it). `onerec.validation.validate_tables` stays the
in-memory path for a batch already in memory (the `onerec validate` CLI, tests).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.config import Config
from onerec.data.eventlog import BATCH_ROWS, iter_events
from onerec.data.schema import EVENT_COLUMNS, EVENT_KEY
from onerec.validation import (
    REFERENCE_VERSION,
    SuiteRun,
    ValidationReport,
    _drift_observed,
    _drift_suite,
    _events_suite,
    _first_tags,
    _items_suite,
    _jsonable,
    _quantiles,
    _run_suite,
    _users_suite,
    gx_context,
    reference_stats,
    suite_failures,
)

CHUNK_ROWS = 200_000  # batch events per GX run of the events suite
SAMPLE_ROWS = 250_000  # batch events drift and the reference quantiles see (the sample: 218,876)
DRIFT_COLUMNS = ("is_click", "watch_ratio", "video_id")
_INCREASING = "expect_column_values_to_be_increasing"


@dataclass
class LogScan:
    """What the validate stage needs from the log, and the validation report of its batch."""

    report: ValidationReport
    n_batch_events: int  # events after the watermark and before `until` (validated)
    n_train_events: int  # events before the held-out window
    n_holdout_events: int  # events in [holdout_start_ms, until_ms)
    fingerprint: str  # sha256 of the batch's (user, video, time) keys, 16 hex digits
    reference: dict[str, Any] | None  # the batch's drift reference (None: empty batch)


class ResultMerge:
    """Folds the events suite's results on consecutive chunks into the results on their
    concatenation (what GX reports on the whole batch, as far as `validation._failure` reads
    them: success, unexpected and element counts, the first offending values)."""

    def __init__(self, sample_n: int) -> None:
        self.sample_n = max(sample_n, 1)
        self.results: list[Any] | None = None
        self.rows = 0

    def add(self, results: list[Any], rows: int, late_first_row: Any = None) -> None:
        """One chunk's results (`rows` events). `late_first_row`: the chunk's first `time_ms`
        when it is older than the previous chunk's last (a time-order violation no single
        chunk sees), else None."""
        results = [copy.deepcopy(r) for r in results]
        if late_first_row is not None:
            for r in results:
                if r.expectation_config.type == _INCREASING and "unexpected_count" in r.result:
                    r.success = False
                    r.result["unexpected_count"] += 1
                    r.result["partial_unexpected_list"] = [late_first_row, *r.result.get(
                        "partial_unexpected_list", [])][: self.sample_n]
                    _percentages(r.result)
        self.rows += rows
        if self.results is None:
            self.results = results
            return
        self.results = [self._fold(a, b) for a, b in zip(self.results, results, strict=True)]

    def _fold(self, a: Any, b: Any) -> Any:
        if _raised(a) or (a.success is False and "unexpected_count" not in a.result
                          and "observed_value" not in a.result):
            return a
        if _raised(b):
            return b
        kind = a.expectation_config.type
        if kind == "expect_column_max_to_be_between":
            obs = [r.result.get("observed_value") for r in (a, b)]
            obs = [o for o in obs if o is not None]
            a.result["observed_value"] = max(obs) if obs else None
            return a
        if "unexpected_count" in a.result and "unexpected_count" in b.result:
            ra, rb = a.result, b.result
            for key in ("element_count", "unexpected_count", "missing_count"):
                if key in ra or key in rb:
                    ra[key] = int(ra.get(key, 0) or 0) + int(rb.get(key, 0) or 0)
            ra["partial_unexpected_list"] = [*ra.get("partial_unexpected_list", []),
                                             *rb.get("partial_unexpected_list", [])][
                                                 : self.sample_n]
            ra.pop("partial_unexpected_index_list", None)
            ra.pop("partial_unexpected_counts", None)
            _percentages(ra)
            a.success = bool(a.success and b.success)
            return a
        return a if not a.success or b.success else b

    def merged(self) -> list[Any]:
        """The merged results, the expectations on the whole batch decided on its totals."""
        out = self.results or []
        for r in out:
            if _raised(r):
                continue
            kind, kw = r.expectation_config.type, r.expectation_config.kwargs
            if kind == "expect_table_row_count_to_be_between":
                r.result["observed_value"] = self.rows
                r.success = _between(self.rows, kw)
            elif kind == "expect_column_max_to_be_between":
                r.success = r.result.get("observed_value") is not None and _between(
                    r.result["observed_value"], kw)
        return out


def _raised(r: Any) -> bool:
    info = r.exception_info or {}
    return bool(info.get("raised_exception")) or any(
        isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _between(value: Any, kw: dict[str, Any]) -> bool:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _percentages(res: dict[str, Any]) -> None:
    n, missing = int(res.get("element_count", 0) or 0), int(res.get("missing_count", 0) or 0)
    bad = int(res["unexpected_count"])
    nonmissing = n - missing
    pct = 100.0 * bad / nonmissing if nonmissing else None
    res["unexpected_percent"] = pct
    if "unexpected_percent_nonmissing" in res:
        res["unexpected_percent_nonmissing"] = pct
    if "unexpected_percent_total" in res:
        res["unexpected_percent_total"] = 100.0 * bad / n if n else None


class BottomK:
    """A uniform sample of at most `k` rows of a stream: the rows with the `k` smallest seeded
    random keys, returned in stream order. Every row is kept while the stream has at most `k`."""

    def __init__(self, k: int, seed: int = 0) -> None:
        if k < 1:
            raise ValueError(f"sample_rows must be >= 1, got {k}")
        self.k, self.rng = k, np.random.default_rng(seed)
        self.frame: pd.DataFrame | None = None
        self.seen = 0

    def add(self, chunk: pd.DataFrame) -> None:
        chunk = chunk.assign(_key=self.rng.random(len(chunk)),
                             _pos=np.arange(self.seen, self.seen + len(chunk)))
        self.seen += len(chunk)
        both = chunk if self.frame is None else pd.concat([self.frame, chunk], ignore_index=True)
        if len(both) > self.k:
            keep = np.sort(np.argpartition(both["_key"].to_numpy(), self.k - 1)[: self.k])
            both = both.take(keep).reset_index(drop=True)
        self.frame = both

    def sample(self) -> pd.DataFrame:
        if self.frame is None:
            return pd.DataFrame()
        return (self.frame.sort_values("_pos", kind="stable").drop(columns=["_key", "_pos"])
                .reset_index(drop=True))


class _Chunker:
    """Buffers batch rows and hands out chunks of at least `chunk_rows`, cut where `time_ms`
    changes (the rows of the last timestamp wait for the next chunk)."""

    def __init__(self, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = chunk_rows
        self.parts: list[pd.DataFrame] = []
        self.rows = 0

    def add(self, part: pd.DataFrame) -> pd.DataFrame | None:
        self.parts.append(part)
        self.rows += len(part)
        if self.rows < self.chunk_rows:
            return None
        buf = pd.concat(self.parts, ignore_index=True)
        t = buf["time_ms"].to_numpy()
        cut = len(t) - 1
        while cut > 0 and t[cut - 1] == t[-1]:
            cut -= 1
        if cut == 0:  # one timestamp throughout: keep gathering
            self.parts, self.rows = [buf], len(buf)
            return None
        self.parts, self.rows = [buf.iloc[cut:]], len(buf) - cut
        return buf.iloc[:cut].reset_index(drop=True)

    def rest(self) -> pd.DataFrame | None:
        if not self.rows:
            return None
        return pd.concat(self.parts, ignore_index=True)


def scan_log(files: Sequence[Path], items: pd.DataFrame, users: pd.DataFrame, cfg: Config,
             reference: dict | None = None, *, until_ms: int, watermark_ms: int,
             holdout_start_ms: int, now_ms: int, docs_dir: str | Path | None = None,
             source: str = "", chunk_rows: int = CHUNK_ROWS, sample_rows: int = SAMPLE_ROWS,
             batch_rows: int = BATCH_ROWS) -> LogScan:
    """Validate the batch (events in (watermark_ms, until_ms)) of the log `files` and count the
    windows, streaming the log once. The report is `validate_tables`'s on that batch (exactly,
    when the batch has at most `sample_rows` events; see the module docstring beyond). Each
    log file's own schema is the caller's to check first (`validation.log_file_failures` on
    `eventlog.log_schemas`): a file without the schema's columns cannot be cut into a batch."""
    t0 = time.perf_counter()
    vcfg = cfg.validation
    sample_n = vcfg.sample_unexpected
    gx, ctx, src, actions = gx_context(docs_dir)
    events_run = SuiteRun(ctx, gx, src, "events",
                          _events_suite(gx, items, vcfg, reference, int(now_ms)), sample_n,
                          actions)
    merge = ResultMerge(sample_n)
    chunker = _Chunker(chunk_rows)
    sampler = BottomK(sample_rows)
    digest = hashlib.sha256()
    tags: pd.Series = pd.Series(dtype="float64")
    n_train = n_holdout = n_batch = click_n = chunks = 0
    clicks = 0.0
    newest: int | None = None
    last_time: list[Any] = [None]  # the previous validated chunk's last time_ms

    def validate_chunk(chunk: pd.DataFrame) -> None:
        nonlocal chunks
        first = chunk["time_ms"].iat[0]
        late = first if last_time[0] is not None and first < last_time[0] else None
        merge.add(events_run.validate(chunk).results, len(chunk), late_first_row=late)
        last_time[0] = chunk["time_ms"].iat[-1]
        chunks += 1

    for part in iter_events(files, columns=list(EVENT_COLUMNS), batch_rows=batch_rows):
        t = part["time_ms"]
        before = part[t < until_ms]
        held = before["time_ms"] >= holdout_start_ms
        n_holdout += int(held.sum())
        n_train += len(before) - int(held.sum())
        batch = before[before["time_ms"] > watermark_ms].reset_index(drop=True)
        if batch.empty:
            continue
        n_batch += len(batch)
        # a null key (the suite reports it) hashes as -1 instead of stopping the pass
        digest.update(batch[list(EVENT_KEY)].fillna(-1).to_numpy(np.int64).tobytes())
        flags = batch["is_click"].astype("float64")  # nulls skipped, as the in-memory mean does
        clicks += float(flags.sum())
        click_n += int(flags.count())
        top = int(batch["time_ms"].max())
        newest = top if newest is None else max(newest, top)
        tags = tags.add(_first_tags(batch, items).value_counts(), fill_value=0)
        sampler.add(batch[list(DRIFT_COLUMNS)])
        chunk = chunker.add(batch)
        if chunk is not None:
            validate_chunk(chunk)
    rest = chunker.rest()
    if rest is not None:
        validate_chunk(rest)

    suites: dict[str, dict[str, Any]] = {}
    merged = merge.merged()
    failures = suite_failures("events", merged, sample_n)
    suites["events"] = {"success": not failures, "evaluated": len(merged),
                        "failed": len(failures), "elapsed_s": round(time.perf_counter() - t0, 3)}
    for name, df, exps in (("items", items, _items_suite(gx)), ("users", users, _users_suite(gx))):
        summary, fails, _ = _run_suite(ctx, gx, src, name, df, exps, sample_n, actions)
        suites[name], failures = summary, failures + fails
    sample = sampler.sample()
    drift_observed: dict[str, Any] = {}
    if reference is not None and n_batch:
        drift_df = pd.DataFrame({c: sample[c] for c in ("is_click", "watch_ratio")})
        drift_df["tag"] = _first_tags(sample, items)
        summary, fails, result = _run_suite(ctx, gx, src, "drift", drift_df,
                                            _drift_suite(gx, vcfg, reference), sample_n, actions)
        suites["drift"], failures = summary, failures + fails
        drift_observed = _drift_observed(result)
    else:
        suites["drift"] = {"success": True, "evaluated": 0, "failed": 0, "elapsed_s": 0.0,
                           "skipped": True}
    suites["events"]["evaluated"] += 2 * len(EVENT_COLUMNS) * len(files)  # the per-file schemas

    stats: dict[str, Any] = {
        "events_rows": n_batch, "items_rows": len(items), "users_rows": len(users),
        "log_files": [Path(f).name for f in files], "now_ms": int(now_ms),
    }
    if n_batch:
        stats["newest_time_ms"] = newest
        stats["click_rate"] = round(clicks / click_n, 6) if click_n else None
    stats["events_chunks"] = chunks
    stats["drift_sample_rows"] = len(sample)
    stats.update(reference_stats(reference, drift_observed))
    stats["elapsed_s"] = round(time.perf_counter() - t0, 3)
    report = ValidationReport(success=not failures, suites=suites, failures=failures,
                              stats=_jsonable(stats))
    batch_reference = None
    if n_batch:
        shares = tags.sort_values(ascending=False, kind="stable") / tags.sum()
        batch_reference = {
            "version": REFERENCE_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(source), "rows": n_batch,
            "click_rate": clicks / click_n if click_n else float("nan"),
            "tag_distribution": {str(k): float(v) for k, v in shares.items()},
            "watch_ratio_quantiles": {
                "quantiles": [float(q) for q in vcfg.watch_ratio_quantiles],
                "values": _quantiles(sample["watch_ratio"], vcfg.watch_ratio_quantiles)},
            "newest_time_ms": newest,
        }
    return LogScan(report=report, n_batch_events=n_batch, n_train_events=n_train,
                   n_holdout_events=n_holdout, fingerprint=digest.hexdigest()[:16],
                   reference=batch_reference)
