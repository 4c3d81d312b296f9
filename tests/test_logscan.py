"""The validate stage's streaming pass: its report, counts, fingerprint and reference equal the
in-memory path's (`validate_tables` on the batch cut from `read_events`), on a clean slice of
the real log and on a dirty one, validated in several chunks; beyond the sample size, drift
is judged on a uniform sample."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from onerec.config import Config
from onerec.data import eventlog, kuairand
from onerec.logscan import BottomK, LogScan, scan_log
from onerec.validation import ValidationReport, compute_reference, validate_tables

N = 12_000  # real events in the test log (two interleaved files)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.from_preset("tiny")


@pytest.fixture(scope="module")
def real_head(shipped_dir) -> pd.DataFrame:
    return kuairand.read_events(shipped_dir).iloc[:N].reset_index(drop=True)


def _folder(tmp: Path, shipped: Path, events: pd.DataFrame, ordered: bool = True) -> Path:
    """A data folder: `events` split into two interleaved time-ordered files (or, with
    `ordered=False`, the first half and the second half reversed: every row of that file is
    older than the one before, so every chunk boundary in it is a time-order violation that no
    single chunk sees), the real item and user tables."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in (kuairand.ITEMS_FILE, kuairand.USERS_FILES[0]):
        shutil.copy(shipped / name, tmp / name)
    if ordered:
        parts = [events.iloc[0::3], events.drop(index=events.index[0::3])]
    else:
        parts = [events.iloc[: len(events) // 2], events.iloc[len(events) // 2:].iloc[::-1]]
    for i, part in enumerate(parts):
        eventlog.write_log(iter([part.reset_index(drop=True)]), tmp / f"log_{i}.parquet",
                           row_group_rows=1_000)
    return tmp


def _windows(events: pd.DataFrame) -> dict[str, int]:
    t = events["time_ms"]
    return {"watermark_ms": int(t.iloc[500]), "holdout_start_ms": int(t.iloc[N - 3000]),
            "until_ms": int(t.iloc[N - 200])}


def _in_memory(folder: Path, cfg: Config, reference: dict | None, w: dict[str, int]
               ) -> tuple[ValidationReport, pd.DataFrame]:
    """The validate stage as it was: the whole log read, the batch cut, validated at once."""
    raw = kuairand.read_tables(folder)
    ev = raw.events[raw.events["time_ms"] < w["until_ms"]]
    batch = ev[ev["time_ms"] > w["watermark_ms"]].reset_index(drop=True)
    raw.events = batch
    return validate_tables(raw, cfg, reference, now_ms=w["until_ms"]), ev


def _scan(folder: Path, cfg: Config, reference: dict | None, w: dict[str, int],
          **kw) -> LogScan:
    return scan_log(kuairand.log_files(folder), kuairand.read_items(folder),
                    kuairand.read_users(folder), cfg, reference, now_ms=w["until_ms"], **w, **kw)


def _comparable(report: ValidationReport) -> dict:
    d = report.to_dict()
    for s in d["suites"].values():
        s.pop("elapsed_s")
    for key in ("elapsed_s", "events_chunks", "drift_sample_rows"):
        d["stats"].pop(key, None)
    return d


def _check_equal(scan: LogScan, report: ValidationReport, ev: pd.DataFrame, batch_rows: int,
                 w: dict[str, int], cfg: Config) -> None:
    assert _comparable(scan.report) == _comparable(report)
    held = ev["time_ms"] >= w["holdout_start_ms"]
    assert (scan.n_train_events, scan.n_holdout_events) == (int((~held).sum()), int(held.sum()))
    batch = ev[ev["time_ms"] > w["watermark_ms"]]
    assert scan.n_batch_events == len(batch) == report.stats["events_rows"]
    keys = batch[["user_id", "video_id", "time_ms"]].to_numpy(np.int64)
    assert scan.fingerprint == hashlib.sha256(keys.tobytes()).hexdigest()[:16]
    want = compute_reference(batch, kuairand.read_items(SHIPPED_DIR), cfg.validation)
    got = dict(scan.reference)
    for ref in (want, got):
        ref.pop("created_at"), ref.pop("source")
    assert got == want


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "kuairand-pure"


def test_clean_log_in_chunks_gives_the_in_memory_report(tmp_path, shipped_dir, real_head, cfg):
    folder = _folder(tmp_path, shipped_dir, real_head)
    w = _windows(real_head)
    ref = compute_reference(real_head.iloc[:4000], kuairand.read_items(folder), cfg.validation)
    report, ev = _in_memory(folder, cfg, ref, w)
    assert report.success and report.suites["drift"]["evaluated"] == 3
    scan = _scan(folder, cfg, ref, w, chunk_rows=2_500, batch_rows=700)
    assert scan.report.stats["events_chunks"] >= 4  # the suite really ran in pieces
    assert scan.report.stats["drift_sample_rows"] == scan.n_batch_events
    _check_equal(scan, report, ev, 700, w, cfg)


def _dirty(events: pd.DataFrame) -> pd.DataFrame:
    """Corruptions spread over the log, so that several chunks see some and no chunk all."""
    ev = events.copy()
    ev.loc[[900, 5200, 9100], "is_like"] = pd.NA  # nulls (in an int column: the file's dtype
    # family stays int, so the per-file schema check, which would stop the stage, passes)
    ev.loc[[1500, 7000], "watch_ratio"] = 99.0  # out of range
    ev.loc[[3000, 8000, 10_500], "video_id"] = 10**9  # unknown videos
    ev.loc[[4000, 6000], "is_click"] = 3  # not a flag
    dups = ev.iloc[[2000, 2001, 7777]]  # repeated keys (beside their originals, in time)
    ev = pd.concat([ev, dups]).sort_values("time_ms", kind="stable")
    return ev.reset_index(drop=True)


@pytest.mark.parametrize("ordered", [True, False])
def test_dirty_log_in_chunks_gives_the_in_memory_failures(tmp_path, shipped_dir, real_head, cfg,
                                                          ordered):
    events = _dirty(real_head)
    folder = _folder(tmp_path, shipped_dir, events, ordered=ordered)
    w = _windows(real_head)
    ref = compute_reference(real_head.iloc[:4000], kuairand.read_items(folder), cfg.validation)
    report, ev = _in_memory(folder, cfg, ref, w)
    expected = {(f.expectation, f.column) for f in report.failures}
    assert ("expect_column_values_to_not_be_null", "is_like") in expected
    assert ("expect_compound_columns_to_be_unique", "user_id,video_id,time_ms") in expected
    assert (("expect_column_values_to_be_increasing", "time_ms") in expected) == (not ordered)
    scan = _scan(folder, cfg, ref, w, chunk_rows=2_000, batch_rows=500)
    assert scan.report.stats["events_chunks"] >= 4
    assert not scan.report.success
    _check_equal(scan, report, ev, 500, w, cfg)


def test_beyond_the_sample_size_drift_is_judged_on_a_uniform_sample(tmp_path, shipped_dir,
                                                                    real_head, cfg):
    folder = _folder(tmp_path, shipped_dir, real_head)
    w = _windows(real_head)
    ref = compute_reference(real_head.iloc[:4000], kuairand.read_items(folder), cfg.validation)
    full = _scan(folder, cfg, ref, w, chunk_rows=20_000)
    sampled = _scan(folder, cfg, ref, w, chunk_rows=20_000, sample_rows=3_000)
    assert sampled.report.stats["drift_sample_rows"] == 3_000 < sampled.n_batch_events
    assert sampled.report.success and sampled.report.suites["drift"]["evaluated"] == 3
    # exact statistics stay exact; sampled ones are close
    assert sampled.fingerprint == full.fingerprint
    assert sampled.reference["click_rate"] == full.reference["click_rate"]
    assert sampled.reference["tag_distribution"] == full.reference["tag_distribution"]
    drift, drift_full = (s.report.stats["drift_observed"] for s in (sampled, full))
    assert drift["click_rate"] == pytest.approx(drift_full["click_rate"], abs=0.03)
    assert drift["click_rate"] != drift_full["click_rate"]


def test_bottom_k_keeps_everything_up_to_k_then_a_uniform_sample_in_order():
    stream = pd.DataFrame({"x": np.arange(10_000)})
    s = BottomK(20_000)
    for i in range(0, 10_000, 999):
        s.add(stream.iloc[i:i + 999])
    pd.testing.assert_frame_equal(s.sample(), stream)
    s = BottomK(1_000, seed=3)
    for i in range(0, 10_000, 999):
        s.add(stream.iloc[i:i + 999])
    x = s.sample()["x"].to_numpy()
    assert len(x) == 1_000 and len(set(x)) == 1_000 and (np.diff(x) > 0).all()
    # uniform: each tenth of the stream holds about a tenth of the sample
    counts = np.bincount(x // 1_000, minlength=10)
    assert counts.min() > 60 and counts.max() < 140, counts
    with pytest.raises(ValueError, match="sample_rows must be >= 1"):
        BottomK(0)
