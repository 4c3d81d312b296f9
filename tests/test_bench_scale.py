"""bench.scale: the replicated logs are the sample's traffic from other users, the measured
stage runs validate the same batch in both readers, and the fit reads flat as flat."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import scale
from onerec.data import eventlog, kuairand

HEAD = 6_000  # real events in the small source folder


@pytest.fixture(scope="module")
def small_src(shipped_dir, tmp_path_factory) -> Path:
    """The first HEAD shipped events in two files (overlapping in time), the real tables."""
    src = tmp_path_factory.mktemp("src")
    ev = kuairand.read_events(shipped_dir).iloc[:HEAD]
    ev.iloc[0::2].to_parquet(src / "log_a.parquet", index=False)
    ev.iloc[1::2].to_parquet(src / "log_b.parquet", index=False)
    for name in (kuairand.ITEMS_FILE, kuairand.USERS_FILES[0]):
        shutil.copy(shipped_dir / name, src / name)
    return src


def test_build_log_replicates_with_shifted_users_in_time_order(small_src, tmp_path):
    dest = scale.build_log(3, tmp_path / "x3", src=small_src, row_group_rows=1_000)
    src_files, files = kuairand.log_files(small_src), kuairand.log_files(dest)
    assert [f.name for f in files] == [f.name for f in src_files]
    for s, f in zip(src_files, files, strict=True):
        a, b = pd.read_parquet(s), pd.read_parquet(f)
        assert len(b) == 3 * len(a) and b["time_ms"].is_monotonic_increasing
        assert list(b.columns) == list(a.columns) and (b.dtypes == a.dtypes).all()
        replica = b["user_id"] // scale.USER_OFFSET
        assert sorted(replica.unique()) == [0, 1, 2]
        for r in range(3):  # each replica is the source, its users shifted
            got = b[replica == r].reset_index(drop=True)
            want = a.assign(user_id=a["user_id"] + r * scale.USER_OFFSET)
            pd.testing.assert_frame_equal(got, want)
        meta = pq.ParquetFile(f).metadata
        assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 1_000
    merged = kuairand.read_events(dest)
    assert not merged.duplicated(["user_id", "video_id", "time_ms"]).any()
    assert (dest / kuairand.ITEMS_FILE).is_file() and (dest / kuairand.USERS_FILES[0]).is_file()
    # built once: the same factor is reused, another one rebuilt
    stamp = files[0].stat().st_mtime_ns
    assert scale.build_log(3, dest, src=small_src, row_group_rows=1_000) == dest
    assert files[0].stat().st_mtime_ns == stamp
    scale.build_log(2, dest, src=small_src, row_group_rows=1_000)
    assert eventlog.log_rows(kuairand.log_files(dest)) == 2 * HEAD


def test_both_readers_validate_the_same_batch_in_a_measured_subprocess(small_src, tmp_path):
    folder = scale.build_log(2, tmp_path / "x2", src=small_src)
    runs = {m: scale.measure(m, folder, timeout_s=300) for m in scale.MODES}
    assert {r["fingerprint"] for r in runs.values()} == {runs["streamed"]["fingerprint"]}
    for r in runs.values():
        assert r["success"] and r["batch_rows"] == 2 * HEAD
        # the child's own peak: the interpreter with pandas, torch and GX is hundreds of MB
        assert 150 < r["peak_rss_mb"] < 8_000 and r["wall_s"] >= r["stage_s"] > 0
    assert not list(tmp_path.glob("scale-run-*"))  # the run folders are removed
    with pytest.raises(ValueError, match="mode: expected one of"):
        scale.measure("mmap", folder)


def _row(mode: str, rows: int, rss: float) -> dict:
    return {"mode": mode, "factor": rows // 1000, "log_rows": rows, "file_mb": rows / 5e4,
            "peak_rss_mb": rss, "wall_s": rows / 1e5, "rows_per_s": 1e5}


def test_fit_reads_flat_as_zero_and_linear_as_one():
    sizes = [10**5, 10**6, 10**7]
    rows = [_row("streamed", n, 700.0) for n in sizes]
    rows += [_row("in-memory", n, n / 1000) for n in sizes]
    f = scale.fit(rows)
    assert f["streamed"]["exponent"] == pytest.approx(0, abs=1e-9)
    assert f["streamed"]["mb_per_million_rows"] == pytest.approx(0, abs=1e-9)
    assert f["in-memory"]["exponent"] == pytest.approx(1)
    assert f["in-memory"]["mb_per_million_rows"] == pytest.approx(1000)
    table = scale.data_table(rows)
    assert "| streamed | x100 | 100,000 |" in table
    assert "- streamed: peak RSS ~ rows^0.000 (+0.0 MB per million rows)" in table
    assert "- in-memory: peak RSS ~ rows^1.000" in table
    # one size: no slope to fit
    assert scale.fit([_row("streamed", 10**5, 700.0)])["streamed"]["exponent"] is None


def test_main_rejects_unknown_sections_and_bad_factors(capsys):
    with pytest.raises(SystemExit):
        scale.main(["--only", "catalog"])
    assert "unknown section(s) ['catalog']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scale.main(["--factors", "0,10"])
    assert "factors must be >= 1" in capsys.readouterr().err


def test_replicas_keep_every_row_once():
    ev = pd.DataFrame({"user_id": np.arange(10), "time_ms": np.repeat([5, 7], 5)})
    out = pd.concat(scale._replicas(ev, 4, out_rows=12), ignore_index=True)
    assert len(out) == 40 and not out.duplicated().any()
    assert out["time_ms"].is_monotonic_increasing
