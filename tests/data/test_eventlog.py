"""The streamed event log: the same rows in the same order as the in-memory reader, read one
row group at a time, on the shipped sample and on synthetic logs with ties and overlaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onerec.data import DataError, eventlog, kuairand


def _streamed(files, **kw) -> tuple[pd.DataFrame, list[int]]:
    chunks = list(eventlog.iter_events(files, **kw))
    return pd.concat(chunks, ignore_index=True), [len(c) for c in chunks]


@pytest.mark.parametrize("batch_rows", [131_072, 4_999])
def test_shipped_log_streams_to_exactly_the_in_memory_log(shipped_dir, batch_rows):
    files = kuairand.log_files(shipped_dir)
    got, sizes = _streamed(files, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(got, kuairand.read_events(shipped_dir))
    # two files, each decoded batch_rows at a time: no chunk holds more than both buffers
    assert max(sizes) <= 2 * batch_rows and len(sizes) >= 218_876 // (2 * batch_rows)


def test_footer_schemas_equal_the_read_tables_schemas(shipped_dir):
    files = kuairand.log_files(shipped_dir)
    assert eventlog.log_schemas(files) == kuairand.read_tables(shipped_dir).log_schemas
    assert eventlog.log_rows(files) == 218_876


def _log(rng: np.random.Generator, n: int, t0: int, span: int) -> pd.DataFrame:
    """A time-ordered log whose timestamps repeat often (ties inside and across files)."""
    t = np.sort(rng.integers(t0, t0 + span, n))
    return pd.DataFrame({"user_id": rng.integers(0, 50, n), "video_id": np.arange(n),
                         "time_ms": t, "is_click": rng.integers(0, 2, n).astype("int8")})


def test_overlapping_files_with_ties_merge_as_a_stable_sort(tmp_path):
    rng = np.random.default_rng(0)
    frames = [_log(rng, 3000, 0, 400), _log(rng, 2000, 300, 400), _log(rng, 500, 350, 20)]
    for i, f in enumerate(frames):
        eventlog.write_log(iter([f]), tmp_path / f"log_{i}.parquet", row_group_rows=256)
    files = kuairand.log_files(tmp_path)
    want = kuairand.merge_logs(frames)
    assert want["time_ms"].is_monotonic_increasing
    for batch_rows in (3, 100, 10_000):
        got, _ = _streamed(files, batch_rows=batch_rows)
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(got, kuairand.read_events(tmp_path))


def test_a_file_out_of_order_is_concatenated_as_is(tmp_path):
    rng = np.random.default_rng(1)
    a, b = _log(rng, 500, 0, 100), _log(rng, 500, 50, 100)
    b = b.iloc[::-1].reset_index(drop=True)  # validation must see this file out of order
    eventlog.write_log(iter([a]), tmp_path / "log_a.parquet", row_group_rows=64)
    eventlog.write_log(iter([b]), tmp_path / "log_b.parquet", row_group_rows=64)
    files = kuairand.log_files(tmp_path)
    assert eventlog.is_time_ordered(files[0]) and not eventlog.is_time_ordered(files[1])
    got, _ = _streamed(files, batch_rows=33)
    pd.testing.assert_frame_equal(got, pd.concat([a, b], ignore_index=True))
    pd.testing.assert_frame_equal(got, kuairand.read_events(tmp_path))


def test_the_reader_decodes_one_row_group_at_a_time(tmp_path):
    """What Arrow holds while the stream is read is about one row group, not the file."""
    n, group = 400_000, 10_000
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({c: rng.integers(0, 1 << 40, n) for c in
                          ("user_id", "video_id", "play_time_ms")}
                         | {"time_ms": np.arange(n, dtype=np.int64)})
    path = eventlog.write_log(iter([frame]), tmp_path / "log_big.parquet", row_group_rows=group)
    assert pq.ParquetFile(path).metadata.num_row_groups == n // group
    full = frame.memory_usage(index=False).sum()  # 12.8 MB decoded
    base = pa.total_allocated_bytes()
    held, rows = [], 0
    for chunk in eventlog.iter_events([path], batch_rows=group):
        held.append(pa.total_allocated_bytes() - base)
        rows += len(chunk)
        assert len(chunk) <= group
    assert rows == n and len(held) == n // group
    # one row group of four int64 columns decoded is 320 kB; the file is 12.8 MB (random ids do
    # not compress): with pyarrow's default pre-buffering the reader held all of it
    assert max(held) < full / 5, (max(held), full)


def test_write_log_splits_row_groups_and_leaves_no_temp_file(tmp_path):
    frame = pd.DataFrame({"time_ms": np.arange(1000, dtype=np.int64)})
    path = eventlog.write_log(iter([frame.iloc[:600], frame.iloc[600:]]),
                              tmp_path / "log_x.parquet", row_group_rows=250)
    sizes = [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(5)]
    assert sizes == [250, 250, 100, 250, 150]
    assert [p.name for p in tmp_path.iterdir()] == ["log_x.parquet"]
    with pytest.raises(DataError, match=r"log_y\.parquet: no rows to write"):
        eventlog.write_log(iter([]), tmp_path / "log_y.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["log_x.parquet"]


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "log_bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"cannot read .*log_bad\.parquet as parquet"):
        list(eventlog.iter_events([tmp_path / "log_bad.parquet"]))
    with pytest.raises(DataError, match=r"missing file: .*log_none\.parquet"):
        eventlog.log_schemas([tmp_path / "log_none.parquet"])
