"""The impression log as a stream of bounded chunks, read from parquet one batch at a time.

`onerec.data.kuairand.read_events` returns the whole log as one DataFrame: simple, and what the
apps that need every event at once use. The pipeline's data stage (`onerec.stages.validate`)
must not: its memory would grow with the log, and the log grows every day. `iter_events` yields
the same rows in the same order (`read_events`'s merge: time-ordered files merged by a stable
sort on `time_ms`, consecutive files allowed to overlap; a file out of order concatenated as
is, so that validation reports it), holding at most about one `batch_rows` batch per log file
(plus the rows that tie on the last `time_ms` of a batch). Parquet is decoded one row group at
a time (`pyarrow.parquet.ParquetFile.iter_batches`), so a file's row-group size bounds what the
decoder holds: write logs with row groups of a bounded size (`ROW_GROUP_ROWS`).

`log_schemas` reads each file's columns and dtypes from the parquet footer only, so the
per-file schema check (`onerec.validation.log_file_failures`) needs no data pages at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from onerec.data.schema import DataError
from onerec.io import atomic_path

# rows per decoded batch: ~10 MB for the schema's 11 event columns
BATCH_ROWS = 131_072
# row-group size for logs this project writes (the shipped sample's files are one group each)
ROW_GROUP_ROWS = 262_144


def _unreadable(path: Path, e: Exception) -> DataError:
    # the message `kuairand._read_parquet` gives: validation reports it as an unreadable file
    return DataError(f"cannot read {path} as parquet ({type(e).__name__}: {e})")


def open_log(path: str | Path) -> pq.ParquetFile:
    """A log file's parquet reader (footer read, no data); DataError naming a missing or
    unreadable file. `pre_buffer=False`: pyarrow's default pre-buffering reads the column
    chunks of every row group ahead of the batch asked for, i.e. the whole (compressed) file
    (tests/data/test_eventlog.py measures it)."""
    path = Path(path)
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except Exception as e:  # pyarrow raises several types for a truncated or foreign file
        raise _unreadable(path, e) from None


def log_schemas(files: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Each file's column -> pandas dtype, as `pd.read_parquet` would give them, from the
    footers alone (`kuairand.RawTables.log_schemas` without reading the events)."""
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        schema = open_log(f).schema_arrow
        out[Path(f).name] = dict(schema.empty_table().to_pandas().dtypes.items())
    return out


def log_rows(files: Sequence[Path]) -> int:
    """Rows in the log files, from their footers."""
    return sum(open_log(f).metadata.num_rows for f in files)


def iter_file(path: str | Path, columns: Sequence[str] | None = None,
              batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """One file's rows in file order, `batch_rows` at a time (never more than one row group
    decoded at once); DataError naming the file when a data page cannot be read."""
    path = Path(path)
    pf = open_log(path)
    cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
    batches = pf.iter_batches(batch_size=batch_rows, columns=cols, use_pandas_metadata=False)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a corrupt page past a valid footer
            raise _unreadable(path, e) from None
        if batch is None:
            return
        if batch.num_rows:
            yield batch.to_pandas()


def is_time_ordered(path: str | Path, batch_rows: int = BATCH_ROWS) -> bool:
    """Whether a file's `time_ms` never decreases (False when it has no `time_ms` column),
    reading that one column a batch at a time."""
    if "time_ms" not in open_log(path).schema_arrow.names:
        return False
    last = None
    for chunk in iter_file(path, ["time_ms"], batch_rows):
        t = chunk["time_ms"]
        if not t.is_monotonic_increasing or (last is not None and t.iat[0] < last):
            return False
        last = t.iat[-1]
    return True


def iter_events(files: Sequence[Path], columns: Sequence[str] | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The log files as one stream of chunks, in exactly `kuairand.read_events`'s row order.

    Time-ordered files (all of them, checked first on `time_ms` alone) are merged k-way: every
    row older than the smallest "newest row read so far" among the unfinished files can be
    emitted, ties going in file order, as a stable sort of the concatenation would put them.
    Otherwise the files are concatenated as they are, as `read_events` does."""
    files = [Path(f) for f in files]
    if len(files) > 1 and all(is_time_ordered(f, batch_rows) for f in files):
        yield from _merge(files, columns, batch_rows)
        return
    for f in files:
        yield from iter_file(f, columns, batch_rows)


def _merge(files: list[Path], columns: Sequence[str] | None,
           batch_rows: int) -> Iterator[pd.DataFrame]:
    readers = [iter_file(f, columns, batch_rows) for f in files]
    buffers: list[pd.DataFrame | None] = [None] * len(files)
    live = [True] * len(files)

    def refill(i: int) -> None:
        nxt = next(readers[i], None)
        if nxt is None:
            live[i] = False
            return
        old = buffers[i]
        buffers[i] = nxt if old is None or old.empty else pd.concat([old, nxt], ignore_index=True)

    for i in range(len(files)):
        refill(i)
    while True:
        newest = [buffers[i]["time_ms"].iat[-1] for i in range(len(files)) if live[i]]
        bound = min(newest) if newest else None  # no unread row is older than this
        parts = []
        for i, buf in enumerate(buffers):
            if buf is None or buf.empty:
                continue
            n = len(buf) if bound is None else int(
                np.searchsorted(buf["time_ms"].to_numpy(), bound, side="left"))
            if n:
                parts.append(buf.iloc[:n])
                buffers[i] = buf.iloc[n:]
        if parts:
            out = pd.concat(parts, ignore_index=True)
            order = np.argsort(out["time_ms"].to_numpy(), kind="stable")
            yield out.take(order).reset_index(drop=True)
        if bound is None:
            return
        for i in range(len(files)):  # the files holding the bound: read on past it
            buf = buffers[i]
            if live[i] and buf is not None and buf["time_ms"].iat[-1] == bound:
                refill(i)


def write_log(frames: Iterator[pd.DataFrame], dest: str | Path,
              row_group_rows: int = ROW_GROUP_ROWS) -> Path:
    """Write a log file from chunks (each the next rows in order), in row groups of at most
    `row_group_rows`, atomically: readers see the old file or the whole new one."""
    dest = Path(dest)
    with atomic_path(dest, suffix=".parquet") as tmp:
        writer = None
        try:
            for frame in frames:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=row_group_rows)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"{dest}: no rows to write")
    return dest
