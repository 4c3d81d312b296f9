"""Data validation: Great Expectations 1.x suites that gate every batch before anything trains.

Four suites, each a `gx.ExpectationSuite` run on a whole-dataframe batch of a pandas asset:

- ``events``: schema (every `EVENT_COLUMNS` column exists, int / float dtype family, no nulls),
  ranges (0/1 flags, watch ratio, durations, play time), duplicate (user, video, time) keys,
  time order, freshness (not in the future, not too old, not older than the reference's newest
  event) and row count, and unknown video ids (not in the item table).
- ``items`` / ``users``: keys exist, are unique and not null; counts and dates in range.
- ``drift`` (only with a reference snapshot): click rate, tag distribution (KL divergence) and
  watch-ratio quantiles against `compute_reference` statistics of an earlier, accepted dataset.

Design choices:
- Tables are validated *raw*, as `onerec.data.kuairand.read_tables` returns them, so a dropped or
  mistyped column is reported here by name instead of failing later in `conform`.
- One ephemeral GX context per `validate_tables` call (creating one is cheap, importing GX is
  not: the import is deferred so `compute_reference` and `load_reference` stay light). Progress
  bars, analytics and GX's log chatter are switched off.
- Each log file's schema is also checked on its own (`log_file_failures`): a column renamed,
  dropped or retyped in one new file is reported naming that file, before concatenation turns
  it into NaNs and an upcast dtype of the merged table.
- Duplicate keys and time order are checked on the whole event stream as `read_events` returns
  it (time-ordered files merged by a stable sort on time_ms; a file out of order is left as is,
  so this suite reports it).
- Every failed expectation becomes a `Failure` with the expectation's snake_case name, the
  column, the observed value, a few offending values and a one-line message that names the
  limit (kept in the expectation's ``meta``). An expectation that raises inside GX (a missing
  column, a wrong dtype) is a failure carrying the exception message, never a crash.
- Reports are plain JSON (numpy scalars converted) and Markdown, written atomically.
- The pipeline's validate stage does not call `validate_tables` on the whole log: it streams
  the log through `onerec.logscan`, which runs these suites (`SuiteRun`) on bounded chunks and
  merges their results, so its memory does not grow with the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.config import Config, ValidationConfig
from onerec.data.kuairand import (
    EVENT_EXTRA,
    RawTables,
    log_files,
    read_events,
    read_items,
    read_tables,
)
from onerec.data.schema import (
    EVENT_COLUMNS,
    EVENT_KEY,
    FEEDBACK_FLAGS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    DataError,
)
from onerec.io import atomic_write_text

REFERENCE_VERSION = 1
REFERENCE_FILE = "reference.json"
UNKNOWN_TAG = "unknown"
SUITES = ("events", "items", "users", "drift")

# dtype families accepted by ExpectColumnValuesToBeInTypeList (numpy and pandas nullable names)
INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype",
             "UInt32Dtype", "UInt64Dtype"]
FLOAT_TYPES = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]


# -- report ------------------------------------------------------------------------------------
@dataclass
class Failure:
    """One failed expectation."""

    suite: str  # events | items | users | drift
    expectation: str  # GX snake_case name, e.g. expect_column_values_to_not_be_null
    column: str  # column name, or the columns joined with "," for multi-column expectations
    observed: str  # short description of what was seen
    unexpected_count: int | None  # offending rows, when the expectation counts rows
    sample: list[Any]  # up to cfg.validation.sample_unexpected offending values
    message: str  # one readable line: suite.column, expectation, observed, limit


@dataclass
class ValidationReport:
    success: bool
    suites: dict[str, dict[str, Any]]  # suite -> {success, evaluated, failed, elapsed_s}
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # rows per table, timings, reference

    def failures_for(self, column: str | None = None, expectation: str | None = None,
                     suite: str | None = None) -> list[Failure]:
        """Failures matching all the given filters (column matches any of a joined list)."""
        return [f for f in self.failures
                if (column is None or column in f.column.split(","))
                and (expectation is None or f.expectation == expectation)
                and (suite is None or f.suite == suite)]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"success": self.success, "suites": self.suites,
                          "failures": [asdict(f) for f in self.failures], "stats": self.stats})

    def to_markdown(self) -> str:
        lines = [f"# Data validation: {'PASSED' if self.success else 'FAILED'}", ""]
        if self.stats:
            lines += ["| stat | value |", "| --- | --- |"]
            lines += [f"| {k} | {_md(v)} |" for k, v in self.stats.items()]
            lines.append("")
        lines += ["| suite | result | evaluated | failed | seconds |", "| --- | --- | --- | --- | --- |"]
        for name, s in self.suites.items():
            result = "skipped" if s.get("skipped") else ("pass" if s["success"] else "FAIL")
            lines.append(f"| {name} | {result} | {s['evaluated']} | {s['failed']} | "
                         f"{s['elapsed_s']:.2f} |")
        lines.append("")
        if self.failures:
            lines += [f"## Failures ({len(self.failures)})", ""]
            for f in self.failures:
                lines.append(f"- **{f.suite}.{f.column}** `{f.expectation}`: {_md(f.message)}")
                if f.sample:
                    lines.append(f"  - sample: `{_md(json.dumps(_jsonable(f.sample)))}`")
        else:
            lines.append("No failures.")
        return "\n".join(lines) + "\n"


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_report(report: ValidationReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``summary.md`` into `out_dir` (created), each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = atomic_write_text(out_dir / "report.json",
                           json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    md = atomic_write_text(out_dir / "summary.md", report.to_markdown())
    return js, md


def _jsonable(v: Any) -> Any:
    """Recursively turn numpy / pandas values into plain JSON types (NaN and NA become None)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, np.ndarray, pd.Index)):
        return [_jsonable(x) for x in v]
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    return str(v)


# -- reference snapshot ------------------------------------------------------------------------
def _first_tags(events: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """The first tag of each shown video ("39,12" -> "39"), UNKNOWN_TAG when it has none."""
    if "video_id" not in items.columns or "tag" not in items.columns:
        return pd.Series(UNKNOWN_TAG, index=events.index, dtype=object)
    first = (items["tag"].astype("string").fillna("").str.split(",").str[0].str.strip()
             .replace("", UNKNOWN_TAG))
    lookup = pd.Series(first.to_numpy(dtype=object), index=items["video_id"].to_numpy())
    lookup = lookup[~lookup.index.duplicated(keep="first")]
    return events["video_id"].map(lookup).fillna(UNKNOWN_TAG).astype(object)


def _quantiles(s: pd.Series, qs: list[float]) -> list[float]:
    # "nearest", as GX's pandas column.quantile_values metric computes them
    return [float(x) for x in s.astype("float64").quantile(qs, interpolation="nearest")]


def compute_reference(events: pd.DataFrame, items: pd.DataFrame, cfg: ValidationConfig,
                      source: str = "") -> dict:
    """Statistics of an accepted dataset that later batches are compared with (drift suite)."""
    if len(events) == 0:
        raise DataError(f"cannot compute a reference from an empty event table ({source})")
    tags = _first_tags(events, items).value_counts(normalize=True)
    return {
        "version": REFERENCE_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "rows": len(events),
        "click_rate": float(events["is_click"].astype("float64").mean()),
        "tag_distribution": {str(k): float(v) for k, v in tags.items()},
        "watch_ratio_quantiles": {
            "quantiles": [float(q) for q in cfg.watch_ratio_quantiles],
            "values": _quantiles(events["watch_ratio"], cfg.watch_ratio_quantiles),
        },
        "newest_time_ms": int(events["time_ms"].max()),
    }


def reference_from_folder(data_dir: str | Path, cfg: Config | ValidationConfig,
                          log_file: str | Path | None = None) -> dict:
    """Reference from a dataset folder: all its logs, or only `log_file` (a name in the folder)."""
    vcfg = cfg.validation if isinstance(cfg, Config) else cfg
    data_dir = Path(data_dir)
    files = [data_dir / Path(log_file).name] if log_file is not None else log_files(data_dir)
    events = read_events(data_dir, files)
    source = ", ".join(str(f) for f in files)
    return compute_reference(events, read_items(data_dir), vcfg, source=source)


def save_reference(ref: dict, path: str | Path) -> Path:
    return atomic_write_text(Path(path), json.dumps(_jsonable(ref), indent=2) + "\n")


_REFERENCE_KEYS = ("click_rate", "tag_distribution", "watch_ratio_quantiles", "newest_time_ms",
                   "rows")


def load_reference(path: str | Path) -> dict:
    """Read a reference snapshot; DataError naming the path when it is missing or corrupt."""
    path = Path(path)
    try:
        ref = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing reference snapshot: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"corrupt reference snapshot {path}: {e}") from None
    if not isinstance(ref, dict):
        raise DataError(f"corrupt reference snapshot {path}: top level must be an object")
    missing = [k for k in _REFERENCE_KEYS if k not in ref]
    if missing:
        raise DataError(f"corrupt reference snapshot {path}: missing key(s) {missing}")
    wq = ref["watch_ratio_quantiles"]
    if (not isinstance(wq, dict) or len(wq.get("quantiles", [])) != len(wq.get("values", []))
            or not isinstance(ref["tag_distribution"], dict) or not ref["tag_distribution"]):
        raise DataError(f"corrupt reference snapshot {path}: malformed watch_ratio_quantiles "
                        "or tag_distribution")
    return ref


# -- suites ------------------------------------------------------------------------------------
def _gx():
    """Import GX quietly (no analytics, no INFO chatter); deferred because the import is slow."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx


def _exp(cls: type, limit: str, **kwargs: Any):
    """An expectation whose meta carries the human-readable limit used in failure messages."""
    return cls(meta={"limit": limit}, **kwargs)


def _events_suite(gx, items: pd.DataFrame, vcfg: ValidationConfig, reference: dict | None,
                  now_ms: int) -> list:
    E = gx.expectations
    out = []
    for col, dtype in EVENT_COLUMNS.items():
        family = "float" if dtype.startswith("float") else "int"
        out += [
            _exp(E.ExpectColumnToExist, "column must exist", column=col),
            _exp(E.ExpectColumnValuesToBeInTypeList, f"dtype family {family} (schema: {dtype})",
                 column=col, type_list=FLOAT_TYPES if family == "float" else INT_TYPES),
            _exp(E.ExpectColumnValuesToNotBeNull, "no nulls", column=col),
        ]
    out += [_exp(E.ExpectColumnValuesToBeInSet, "in {0, 1}", column=c, value_set=[0, 1])
            for c in FEEDBACK_FLAGS]
    out += [
        _exp(E.ExpectColumnValuesToBeBetween,
             f"0 <= watch_ratio <= {vcfg.max_watch_ratio} (validation.max_watch_ratio)",
             column="watch_ratio", min_value=0, max_value=vcfg.max_watch_ratio),
        _exp(E.ExpectColumnValuesToBeBetween, "duration_ms > 0", column="duration_ms",
             min_value=0, strict_min=True),
        _exp(E.ExpectColumnValuesToBeBetween, "play_time_ms >= 0", column="play_time_ms",
             min_value=0),
        _exp(E.ExpectTableRowCountToBeBetween,
             f"at least {vcfg.min_rows} rows (validation.min_rows)", min_value=vcfg.min_rows),
        _exp(E.ExpectColumnMaxToBeBetween,
             f"newest time_ms <= now + {vcfg.max_future_ms} ms = {now_ms + vcfg.max_future_ms} "
             "(validation.max_future_ms)", column="time_ms",
             max_value=now_ms + vcfg.max_future_ms),
    ]
    if vcfg.max_age_days is not None:
        oldest_ok = now_ms - int(vcfg.max_age_days * 86_400_000)
        out.append(_exp(E.ExpectColumnMaxToBeBetween,
                        f"newest time_ms >= now - {vcfg.max_age_days} days = {oldest_ok} "
                        "(validation.max_age_days)", column="time_ms", min_value=oldest_ok))
    if reference is not None:
        newest = int(reference["newest_time_ms"])
        out.append(_exp(E.ExpectColumnMaxToBeBetween,
                        f"newest time_ms >= the reference's newest event {newest} "
                        "(stale re-upload)", column="time_ms", min_value=newest))
    if "video_id" in items.columns:
        ids = sorted(int(v) for v in pd.unique(items["video_id"].dropna()))
        out.append(_exp(E.ExpectColumnValuesToBeInSet,
                        f"in the item table's {len(ids)} video ids", column="video_id",
                        value_set=ids))
    out += [
        _exp(E.ExpectCompoundColumnsToBeUnique, "(user_id, video_id, time_ms) unique",
             column_list=list(EVENT_KEY)),
        _exp(E.ExpectColumnValuesToBeIncreasing, "time_ms non-decreasing", column="time_ms"),
    ]
    return out


def _items_suite(gx) -> list:
    E = gx.expectations
    out = [_exp(E.ExpectColumnToExist, "column must exist", column=c) for c in ITEM_COLUMNS]
    out += [
        _exp(E.ExpectColumnValuesToNotBeNull, "no nulls", column="video_id"),
        _exp(E.ExpectColumnValuesToBeUnique, "unique", column="video_id"),
        _exp(E.ExpectColumnValuesToNotBeNull, "no nulls", column="author_id"),
        _exp(E.ExpectColumnValuesToNotBeNull, "no nulls", column="tag"),
        _exp(E.ExpectColumnValuesToBeBetween, "duration_ms > 0 where known (nulls allowed)",
             column="duration_ms", min_value=0, strict_min=True),
        _exp(E.ExpectColumnValuesToBeBetween, "YYYYMMDD in [20000101, 21000101]",
             column="upload_date", min_value=20000101, max_value=21000101),
    ]
    return out


def _users_suite(gx) -> list:
    E = gx.expectations
    out = [_exp(E.ExpectColumnToExist, "column must exist", column=c) for c in USER_COLUMNS]
    out += [
        _exp(E.ExpectColumnValuesToNotBeNull, "no nulls", column="user_id"),
        _exp(E.ExpectColumnValuesToBeUnique, "unique", column="user_id"),
        _exp(E.ExpectColumnValuesToBeInSet, "in {0, 1}", column="is_video_author",
             value_set=[0, 1]),
    ]
    out += [_exp(E.ExpectColumnValuesToBeBetween, ">= 0", column=c, min_value=0)
            for c in ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")]
    return out


def _drift_suite(gx, vcfg: ValidationConfig, ref: dict) -> list:
    E = gx.expectations
    cr, shift = float(ref["click_rate"]), vcfg.max_click_rate_shift
    tags = ref["tag_distribution"]
    weights = np.asarray(list(tags.values()), dtype=np.float64)
    weights = weights / weights.sum()
    wq = ref["watch_ratio_quantiles"]
    qshift = vcfg.max_watch_ratio_quantile_shift
    return [
        _exp(E.ExpectColumnMeanToBeBetween,
             f"click rate within reference {cr:.4f} ± {shift} (validation.max_click_rate_shift)",
             column="is_click", min_value=cr - shift, max_value=cr + shift),
        _exp(E.ExpectColumnKLDivergenceToBeLessThan,
             f"KL(first-tag distribution || reference) <= {vcfg.max_tag_kl} "
             "(validation.max_tag_kl)", column="tag",
             partition_object={"values": list(tags), "weights": weights.tolist()},
             threshold=vcfg.max_tag_kl, tail_weight_holdout=vcfg.tag_unseen_weight),
        _exp(E.ExpectColumnQuantileValuesToBeBetween,
             f"watch_ratio quantiles {wq['quantiles']} within reference "
             f"{[round(v, 4) for v in wq['values']]} ± {qshift} "
             "(validation.max_watch_ratio_quantile_shift)", column="watch_ratio",
             quantile_ranges={"quantiles": [float(q) for q in wq["quantiles"]],
                              "value_ranges": [[float(v) - qshift, float(v) + qshift]
                                               for v in wq["values"]]}),
    ]


# -- per-file schema ---------------------------------------------------------------------------
def _family(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return str(dtype)


def log_file_failures(raw: RawTables) -> list[Failure]:
    """Each log file's own schema against `EVENT_COLUMNS`: every column present, in its dtype
    family. Why per file: a new log batch with a column renamed, dropped or retyped becomes, once
    concatenated with the older files, NaNs and an upcast dtype in the merged table; the suites
    then flag the column but not the file, and a NaN `time_ms` silently drops the new rows from
    the batch. Failures carry the expectation names the GX suite uses (so `failures_for` finds
    them) and a message naming the file and the column."""
    out: list[Failure] = []
    known = set(EVENT_COLUMNS) | set(EVENT_EXTRA)
    for name, dtypes in raw.log_schemas.items():
        others = [set(d) for n, d in raw.log_schemas.items() if n != name]
        # columns only this file has: where a renamed column went
        extra = sorted(c for c in dtypes if c not in known
                       and not (others and all(c in o for o in others)))
        for col, schema_dtype in EVENT_COLUMNS.items():
            want = "float" if schema_dtype.startswith("float") else "int"
            if col not in dtypes:
                hint = f"; columns not in the schema: {', '.join(extra)}" if extra else ""
                observed = f"column missing in log file {name}{hint}"
                out.append(Failure(
                    suite="events", expectation="expect_column_to_exist", column=col,
                    observed=observed, unexpected_count=None, sample=[name],
                    message=f"events.{col}: expect_column_to_exist failed in log file {name}, "
                            f"observed {observed}; limit: column must exist in every log file"))
            elif _family(dtypes[col]) != want:
                observed = f"dtype {dtypes[col]} in log file {name}"
                out.append(Failure(
                    suite="events", expectation="expect_column_values_to_be_in_type_list",
                    column=col, observed=observed, unexpected_count=None, sample=[name],
                    message=f"events.{col}: expect_column_values_to_be_in_type_list failed in "
                            f"log file {name}, observed {observed}; limit: dtype family {want} "
                            f"(schema: {schema_dtype}) in every log file"))
    return out


def unreadable_failure(error: str) -> Failure:
    """A data folder or file that cannot be read at all (missing, truncated, not parquet):
    `error` is the `DataError` message, which names the file."""
    return Failure(suite="files", expectation="readable_file", column="(file)",
                   observed=error, unexpected_count=None, sample=[], message=f"files: {error}")


def failed_report(failures: list[Failure], **stats: Any) -> ValidationReport:
    """The report of a batch stopped before the suites could run (an unreadable file, a log
    file whose schema drifted): these failures only, the suites that did not run skipped."""
    suites: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*SUITES, *(f.suite for f in failures)]):
        n = sum(f.suite == name for f in failures)
        suites[name] = {"success": n == 0, "evaluated": n, "failed": n, "elapsed_s": 0.0,
                        **({} if n else {"skipped": True})}
    return ValidationReport(success=False, suites=suites, failures=failures,
                            stats=_jsonable(stats))


# -- running -----------------------------------------------------------------------------------
def _exception_message(r) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message") or "exception")
    return None


def _short(v: Any, n: int = 160) -> str:
    s = json.dumps(_jsonable(v)) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 3] + "..."


def _failure(suite: str, r, sample_n: int) -> Failure:
    cfg = r.expectation_config
    kw = cfg.kwargs
    column = kw.get("column") or ",".join(kw.get("column_list") or []) or "(table)"
    limit = (cfg.meta or {}).get("limit", "")
    res = r.result or {}
    err = _exception_message(r)
    unexpected = res.get("unexpected_count")
    sample = _jsonable(list(res.get("partial_unexpected_list") or [])[:sample_n])
    if err is not None:
        observed = f"error: {err}"
    elif cfg.type == "expect_column_to_exist":
        observed = "column missing"
    elif "unexpected_count" in res:
        n = res.get("element_count")
        pct = res.get("unexpected_percent")
        observed = f"{unexpected} of {n} rows unexpected" + (
            f" ({pct:.3g}%)" if isinstance(pct, (int, float)) else "")
    elif "observed_value" in res:
        ov = res["observed_value"]
        if cfg.type == "expect_column_kl_divergence_to_be_less_than" and ov is None:
            ov = "inf (tags with no reference weight)"
        observed = _short(ov)
    else:
        observed = "failed"
    if cfg.type == "expect_column_kl_divergence_to_be_less_than":
        details = res.get("details") or {}
        obs = (details.get("observed_partition") or {})
        exp = (details.get("expected_partition") or {})
        if obs and exp:  # the tags that moved most: a useful sample
            diffs = sorted(zip(obs["values"], obs["weights"], exp["weights"], strict=False),
                           key=lambda t: -abs(t[1] - t[2]))[:sample_n]
            sample = [{"tag": t, "observed": round(float(o), 4), "reference": round(float(e), 4)}
                      for t, o, e in diffs]
    message = f"{suite}.{column}: {cfg.type} failed, observed {observed}; limit: {limit}"
    return Failure(suite=suite, expectation=str(cfg.type), column=str(column),
                   observed=observed, unexpected_count=None if unexpected is None
                   else int(unexpected), sample=sample, message=message)


DOCS_SITE = "onerec"  # the Data Docs site `validate_tables(docs_dir=...)` builds


class SuiteRun:
    """One suite registered once in a GX context and validated on one or more dataframes:
    through a GX Checkpoint whose `actions` build the Data Docs pages (one page per validated
    dataframe), or (no actions, or the drift suite) validated on its batch directly. GX 1.24's
    results store cannot serialise the KL-divergence expectation's result (numpy booleans in
    its details), so the drift suite is in report.json only, not in the Data Docs."""

    def __init__(self, ctx, gx, source, name: str, expectations: list, sample_n: int,
                 actions: list) -> None:
        self.name = name
        self._batch_def = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(
            f"{name}_all")
        self._suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        self._result_format = {"result_format": "SUMMARY",
                               "partial_unexpected_count": max(sample_n, 1)}
        self._checkpoint = None
        if actions and name != "drift":
            definition = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=self._batch_def, suite=self._suite))
            self._checkpoint = ctx.checkpoints.add(gx.Checkpoint(
                name=f"{name}_checkpoint", validation_definitions=[definition], actions=actions,
                result_format=self._result_format))

    def validate(self, df: pd.DataFrame) -> Any:
        """The suite's GX validation result on `df`."""
        if self._checkpoint is not None:
            run = self._checkpoint.run(batch_parameters={"dataframe": df})
            return next(iter(run.run_results.values()))
        return self._batch_def.get_batch(batch_parameters={"dataframe": df}).validate(
            self._suite, result_format=self._result_format)


def suite_failures(name: str, results: list, sample_n: int) -> list[Failure]:
    """The failed expectations of a suite's results, a missing column first: the errors of the
    expectations on it follow from it."""
    failures = [_failure(name, r, sample_n) for r in results if not r.success]
    failures.sort(key=lambda f: f.expectation != "expect_column_to_exist")
    return failures


def _run_suite(ctx, gx, source, name: str, df: pd.DataFrame, expectations: list,
               sample_n: int, actions: list) -> tuple[dict[str, Any], list[Failure], Any]:
    """One suite on one dataframe (`SuiteRun`): its summary, failures and GX result."""
    t0 = time.perf_counter()
    result = SuiteRun(ctx, gx, source, name, expectations, sample_n, actions).validate(df)
    failures = suite_failures(name, result.results, sample_n)
    summary = {"success": not failures, "evaluated": len(result.results),
               "failed": len(failures), "elapsed_s": round(time.perf_counter() - t0, 3)}
    return summary, failures, result


def gx_context(docs_dir: str | Path | None) -> tuple[Any, Any, Any, list]:
    """(gx, an ephemeral context, its pandas data source, the checkpoint actions): with
    `docs_dir`, the actions build GX Data Docs there."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("onerec")
    actions: list = []
    if docs_dir is not None:
        ctx.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())}})
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])]
    return gx, ctx, source, actions


_DRIFT_STATS = {"expect_column_mean_to_be_between": "click_rate",
                "expect_column_kl_divergence_to_be_less_than": "tag_kl",
                "expect_column_quantile_values_to_be_between": "watch_ratio_quantiles"}


def _drift_observed(result) -> dict[str, Any]:
    """The measured drift statistics (also when they pass), for the report's stats."""
    out: dict[str, Any] = {}
    for r in result.results:
        key = _DRIFT_STATS.get(r.expectation_config.type)
        if key is None or _exception_message(r) is not None:
            continue
        ov = (r.result or {}).get("observed_value")
        out[key] = ov.get("values") if isinstance(ov, dict) else ov
    return out


def reference_stats(reference: dict[str, Any] | None, drift_observed: Any) -> dict[str, Any]:
    """The report's lines about the drift reference (none without one): one definition for the
    in-memory and the streamed validation."""
    if reference is None:
        return {}
    return {"reference_source": reference.get("source", ""),
            "reference_created_at": reference.get("created_at", ""),
            "reference_rows": reference.get("rows"),
            "reference_click_rate": round(float(reference["click_rate"]), 6),
            "drift_observed": drift_observed}



def validate_tables(raw: RawTables, cfg: Config, reference: dict | None = None, *,
                    now_ms: int | None = None, docs_dir: str | Path | None = None,
                    ) -> ValidationReport:
    """Run the events, items and users suites (and drift when `reference` is given).
    `docs_dir`: also build GX Data Docs there (index.html: every suite's expectations and
    validation result, the HTML a Kubeflow run page links to)."""
    t0 = time.perf_counter()
    vcfg = cfg.validation
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    gx, ctx, source, actions = gx_context(docs_dir)
    sample_n = vcfg.sample_unexpected

    runs = {
        "events": (raw.events, _events_suite(gx, raw.items, vcfg, reference, now_ms)),
        "items": (raw.items, _items_suite(gx)),
        "users": (raw.users, _users_suite(gx)),
    }
    if reference is not None:
        drift_df = pd.DataFrame({c: raw.events[c] for c in ("is_click", "watch_ratio")
                                 if c in raw.events.columns})
        if "video_id" in raw.events.columns:
            drift_df["tag"] = _first_tags(raw.events, raw.items)
        runs["drift"] = (drift_df, _drift_suite(gx, vcfg, reference))

    suites: dict[str, dict[str, Any]] = {}
    failures: list[Failure] = []
    drift_observed: dict[str, Any] = {}
    for name, (df, exps) in runs.items():
        summary, fails, result = _run_suite(ctx, gx, source, name, df, exps, sample_n, actions)
        suites[name] = summary
        failures += fails
        if name == "drift":
            drift_observed = _drift_observed(result)
    if reference is None:
        suites["drift"] = {"success": True, "evaluated": 0, "failed": 0, "elapsed_s": 0.0,
                           "skipped": True}
    # each log file's schema (two checks per column and file); the file-level cause goes
    # first, the merged table's errors follow from it
    file_failures = log_file_failures(raw)
    ev_suite = suites["events"]
    ev_suite["evaluated"] += 2 * len(EVENT_COLUMNS) * len(raw.log_schemas)
    if file_failures:
        failures = file_failures + failures
        ev_suite.update(success=False, failed=ev_suite["failed"] + len(file_failures))

    ev = raw.events
    stats: dict[str, Any] = {
        "events_rows": len(ev), "items_rows": len(raw.items), "users_rows": len(raw.users),
        "log_files": [Path(f).name for f in raw.log_files],
        "now_ms": now_ms,
    }
    if "time_ms" in ev.columns and len(ev):
        stats["newest_time_ms"] = ev["time_ms"].max()
    if "is_click" in ev.columns and len(ev):
        stats["click_rate"] = round(float(ev["is_click"].astype("float64").mean()), 6)
    stats.update(reference_stats(reference, drift_observed))
    stats["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return ValidationReport(success=not failures, suites=suites, failures=failures,
                            stats=_jsonable(stats))


def validate_folder(data_dir: str | Path, cfg: Config, reference: dict | None = None, *,
                    now_ms: int | None = None) -> ValidationReport:
    """`read_tables` + `validate_tables`; DataError on missing or unreadable files propagates."""
    return validate_tables(read_tables(data_dir), cfg, reference, now_ms=now_ms)
