"""Data validation (Great Expectations suites) on the shipped KuaiRand sample and corrupted copies.

The full shipped data is read and validated once per session; corruption cases run on a slice of
the real log (the first 3,000 events) so each GX run takes a fraction of a second.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from onerec.config import Config
from onerec.data.kuairand import RawTables, read_tables
from onerec.data.schema import DataError
from onerec.data.synthetic import make_dataset, write_folder
from onerec.validation import (
    ValidationReport,
    compute_reference,
    load_reference,
    log_file_failures,
    reference_from_folder,
    save_reference,
    validate_folder,
    validate_tables,
    write_report,
)

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "kuairand-pure"
FIRST_LOG = "log_2022-04-25_to_04-30.parquet"
SLICE = 3000


@pytest.fixture(scope="session")
def cfg() -> Config:
    return Config.from_preset("tiny")


@pytest.fixture(scope="session")
def raw_full() -> RawTables:
    return read_tables(SHIPPED)


@pytest.fixture(scope="session")
def shipped_reference() -> dict:
    return load_reference(SHIPPED / "reference.json")


@pytest.fixture(scope="session")
def full_report(raw_full, cfg, shipped_reference) -> ValidationReport:
    return validate_tables(raw_full, cfg, shipped_reference)


@pytest.fixture(scope="session")
def small(raw_full) -> RawTables:
    """The first 3,000 real events with the real item and user tables (not to be mutated)."""
    return RawTables(events=raw_full.events.iloc[:SLICE].reset_index(drop=True),
                     items=raw_full.items, users=raw_full.users, log_files=[])


@pytest.fixture(scope="session")
def small_reference(small, cfg) -> dict:
    return compute_reference(small.events, small.items, cfg.validation, source="first 3000")


@pytest.fixture(scope="session")
def small_report(small, cfg, small_reference) -> ValidationReport:
    return validate_tables(small, cfg, small_reference)


# -- the shipped data ---------------------------------------------------------------------------
def test_shipped_data_passes_every_suite_including_drift(full_report, raw_full):
    assert full_report.failures == [], [f.message for f in full_report.failures]
    assert full_report.success
    assert set(full_report.suites) == {"events", "items", "users", "drift"}
    for name, s in full_report.suites.items():
        assert s["success"] and s["failed"] == 0 and s["evaluated"] > 0, name
    assert full_report.stats["events_rows"] == len(raw_full.events) > 200_000
    drift = full_report.stats["drift_observed"]
    assert set(drift) == {"click_rate", "tag_kl", "watch_ratio_quantiles"}
    assert 0 <= drift["tag_kl"] <= Config().validation.max_tag_kl


def test_shipped_reference_is_the_first_log_only(shipped_reference, cfg):
    again = reference_from_folder(SHIPPED, cfg, log_file=FIRST_LOG)
    assert shipped_reference["source"].endswith(FIRST_LOG)
    assert shipped_reference["rows"] == again["rows"] == 90_140
    assert shipped_reference["newest_time_ms"] == again["newest_time_ms"]
    assert shipped_reference["click_rate"] == pytest.approx(again["click_rate"])
    assert shipped_reference["watch_ratio_quantiles"] == again["watch_ratio_quantiles"]
    assert sum(shipped_reference["tag_distribution"].values()) == pytest.approx(1.0)


def test_clean_slice_passes_including_drift_against_itself(small_report):
    assert small_report.success, [f.message for f in small_report.failures]
    assert small_report.suites["drift"]["evaluated"] == 3


def test_drift_is_skipped_without_a_reference(small, cfg):
    report = validate_tables(small, cfg)
    assert report.success
    assert report.suites["drift"].get("skipped") is True
    assert report.suites["drift"]["evaluated"] == 0


def test_synthetic_dataset_passes_the_schema_suites(tmp_path, cfg):
    ds = make_dataset(cfg.data)
    folder = write_folder(ds, tmp_path / "synthetic", n_logs=2)
    report = validate_folder(folder, cfg)
    assert report.success, [f.message for f in report.failures]
    for name in ("events", "items", "users"):
        assert report.suites[name]["success"] and report.suites[name]["evaluated"] > 0
    assert report.stats["events_rows"] == len(ds.events)


def test_validate_folder_propagates_data_error_for_a_missing_folder(tmp_path, cfg):
    with pytest.raises(DataError, match="not found"):
        validate_folder(tmp_path / "nope", cfg)


# -- corruptions --------------------------------------------------------------------------------
def _events(fn):
    def corrupt(raw: RawTables, ref: dict) -> tuple[RawTables, dict, dict]:
        return replace(raw, events=fn(raw.events.copy())), ref, {}
    return corrupt


def _set(col, value, rows=slice(10, 15)):
    def fn(ev):
        ev = ev.astype({col: "object"}) if value is None else ev
        ev.loc[ev.index[rows], col] = value
        return ev
    return fn


def _duplicate_rows(ev):
    return pd.concat([ev, ev.iloc[100:105]]).sort_values("time_ms", kind="stable",
                                                          ignore_index=True)


def _swap_times(ev):
    t = ev["time_ms"].to_numpy().copy()
    t[[50, 2500]] = t[[2500, 50]]
    return ev.assign(time_ms=t)


def _flip_clicks(ev):
    return ev.assign(is_click=1 - ev["is_click"])


def _single_tag_videos(raw: RawTables, ref: dict):
    """Show only videos whose first tag is a rare one: valid ids, a very different tag mix."""
    first = raw.items["tag"].astype(str).str.split(",").str[0]
    counts = first.value_counts()
    rare = counts[counts >= 5].index[-1]
    vids = raw.items.loc[first == rare, "video_id"].to_numpy()
    ev = raw.events.copy()
    ev["video_id"] = vids[np.arange(len(ev)) % len(vids)].astype(np.int64)
    return replace(raw, events=ev), ref, {}


def _items(fn):
    def corrupt(raw, ref):
        return replace(raw, items=fn(raw.items.copy())), ref, {}
    return corrupt


def _users(fn):
    def corrupt(raw, ref):
        return replace(raw, users=fn(raw.users.copy())), ref, {}
    return corrupt


def _negative_fans(u):
    u.loc[u.index[:3], "fans_user_num"] = -7
    return u


def _future(raw, ref):  # "now" is a day before the newest event
    return raw, ref, {"now_ms": int(raw.events["time_ms"].max()) - 86_400_000}


def _stale(raw, ref):  # the reference has seen newer events than this batch
    return raw, {**ref, "newest_time_ms": int(raw.events["time_ms"].max()) + 1}, {}


CORRUPTIONS = {
    # id: (corruption, suite, column, expectation)
    "null_user_id": (_events(_set("user_id", None)), "events", "user_id",
                     "expect_column_values_to_not_be_null"),
    "negative_watch_ratio": (_events(_set("watch_ratio", -0.5)), "events", "watch_ratio",
                             "expect_column_values_to_be_between"),
    "duplicated_rows": (_events(_duplicate_rows), "events", "user_id,video_id,time_ms",
                        "expect_compound_columns_to_be_unique"),
    "unknown_video_ids": (_events(_set("video_id", 987_654_321)), "events", "video_id",
                          "expect_column_values_to_be_in_set"),
    "dropped_column": (_events(lambda ev: ev.drop(columns=["long_view"])), "events",
                       "long_view", "expect_column_to_exist"),
    "click_rate_shift": (_events(_flip_clicks), "drift", "is_click",
                         "expect_column_mean_to_be_between"),
    "flag_outside_0_1": (_events(_set("is_like", 2)), "events", "is_like",
                         "expect_column_values_to_be_in_set"),
    "zero_duration": (_events(_set("duration_ms", 0)), "events", "duration_ms",
                      "expect_column_values_to_be_between"),
    "time_out_of_order": (_events(_swap_times), "events", "time_ms",
                          "expect_column_values_to_be_increasing"),
    "tag_distribution_shift": (_single_tag_videos, "drift", "tag",
                               "expect_column_kl_divergence_to_be_less_than"),
    "item_duplicate_video_id": (_items(lambda it: pd.concat([it, it.iloc[:3]])), "items",
                                "video_id", "expect_column_values_to_be_unique"),
    "user_negative_fans": (_users(_negative_fans), "users", "fans_user_num",
                           "expect_column_values_to_be_between"),
    "item_dropped_tag": (_items(lambda it: it.drop(columns=["tag"])), "items", "tag",
                         "expect_column_to_exist"),
    "events_in_the_future": (_future, "events", "time_ms", "expect_column_max_to_be_between"),
    "stale_reupload": (_stale, "events", "time_ms", "expect_column_max_to_be_between"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_copy_fails_naming_column_and_expectation(case, small, small_reference, cfg):
    corrupt, suite, column, expectation = CORRUPTIONS[case]
    raw, ref, kwargs = corrupt(small, small_reference)
    report = validate_tables(raw, cfg, ref, **kwargs)
    assert not report.success
    assert not report.suites[suite]["success"]
    hits = report.failures_for(suite=suite, expectation=expectation)
    hits = [f for f in hits if f.column == column]
    assert hits, [f.message for f in report.failures]
    f = hits[0]
    assert column in f.message and expectation in f.message and "limit" in f.message
    assert len(f.sample) <= cfg.validation.sample_unexpected
    json.dumps(report.to_dict(), allow_nan=False)  # numpy values converted


def test_a_drifted_log_file_is_named_before_the_merged_table_errors(small, cfg):
    """Schema drift in one log file (renamed, retyped column) is reported per file, naming it:
    merged with the other files it would only be NaNs and an upcast dtype."""
    ok = dict(small.events.dtypes.items())
    renamed = {("click" if c == "is_click" else c): d for c, d in ok.items()}
    raw = replace(small, log_schemas={"log_a.parquet": ok, "log_b.parquet": renamed})
    fails = log_file_failures(raw)
    assert [(f.column, f.expectation) for f in fails] == [("is_click", "expect_column_to_exist")]
    assert "log file log_b.parquet" in fails[0].message and "not in the schema: click" in \
        fails[0].message
    retyped = replace(small, log_schemas={"log_a.parquet": {**ok, "time_ms": np.dtype("float64")},
                                          "log_b.parquet": ok})
    (f,) = log_file_failures(retyped)
    assert (f.column, f.expectation) == ("time_ms", "expect_column_values_to_be_in_type_list")
    assert "log file log_a.parquet" in f.message and "float64" in f.observed
    assert log_file_failures(replace(small, log_schemas={"log_a.parquet": ok})) == []
    report = validate_tables(raw, cfg)
    assert not report.success and not report.suites["events"]["success"]
    assert report.failures[0] == fails[0]
    json.dumps(report.to_dict(), allow_nan=False)


def test_row_level_failures_count_and_sample_the_offending_rows(small, small_reference, cfg):
    raw, ref, _ = _events(_set("is_like", 2, rows=slice(0, 7)))(small, small_reference)
    (f,) = validate_tables(raw, cfg, ref).failures_for("is_like")
    assert f.unexpected_count == 7
    assert f.sample == [2] * cfg.validation.sample_unexpected


def test_click_rate_shift_reports_observed_rate(small, small_reference, cfg):
    raw, ref, _ = _events(_flip_clicks)(small, small_reference)
    (f,) = validate_tables(raw, cfg, ref).failures_for("is_click", suite="drift")
    observed = float(f.observed)
    assert abs(observed - small_reference["click_rate"]) > cfg.validation.max_click_rate_shift
    assert observed == pytest.approx(1 - small_reference["click_rate"])


def test_a_column_gx_cannot_evaluate_is_a_failure_not_a_crash(small, small_reference, cfg):
    ev = small.events.assign(watch_ratio=small.events["watch_ratio"].astype(str))
    report = validate_tables(replace(small, events=ev), cfg, small_reference)
    assert not report.success
    (between,) = report.failures_for("watch_ratio", "expect_column_values_to_be_between")
    assert between.observed.startswith("error:") and "watch_ratio" in between.message
    assert report.failures_for("watch_ratio", "expect_column_values_to_be_in_type_list")
    json.dumps(report.to_dict(), allow_nan=False)


def test_a_missing_column_is_reported_first_and_its_dependents_do_not_crash(small, cfg):
    report = validate_tables(replace(small, events=small.events.drop(columns=["is_click"])), cfg)
    first = report.failures[0]
    assert (first.column, first.expectation) == ("is_click", "expect_column_to_exist")
    assert first.observed == "column missing"
    dependents = report.failures_for("is_click")[1:]
    assert dependents and all(f.observed.startswith("error:") for f in dependents)


def test_clean_suites_stay_green_when_one_table_is_corrupt(small, small_reference, cfg):
    raw, ref, _ = _users(_negative_fans)(small, small_reference)
    report = validate_tables(raw, cfg, ref)
    assert {f.suite for f in report.failures} == {"users"}
    assert report.suites["events"]["success"] and report.suites["items"]["success"]


# -- reports ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def failing_report(small, small_reference, cfg) -> ValidationReport:
    raw, ref, _ = _events(_duplicate_rows)(small, small_reference)
    return validate_tables(raw, cfg, ref)


def test_write_report_writes_valid_json_and_markdown(failing_report, tmp_path):
    out = tmp_path / "nested" / "report"
    js, md = write_report(failing_report, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "summary.md"]
    data = json.loads(js.read_text())
    assert data["success"] is False
    assert data["failures"][0]["expectation"] == "expect_compound_columns_to_be_unique"
    assert isinstance(data["failures"][0]["sample"][0]["user_id"], int)
    text = md.read_text()
    assert "FAILED" in text and "| events |" in text and "| drift |" in text
    assert "expect_compound_columns_to_be_unique" in text


def test_write_report_never_leaves_a_torn_file(failing_report, small_report, tmp_path,
                                               monkeypatch):
    js, md = write_report(small_report, tmp_path)
    before = js.read_text(), md.read_text()

    def crash(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[:10])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        write_report(failing_report, tmp_path)
    monkeypatch.undo()
    assert (js.read_text(), md.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "summary.md"]


def test_full_report_is_json_serialisable(full_report):
    blob = json.dumps(full_report.to_dict(), allow_nan=False)
    assert json.loads(blob)["stats"]["newest_time_ms"] == full_report.stats["newest_time_ms"]


# -- reference snapshots ------------------------------------------------------------------------
def test_reference_round_trip(small, cfg, tmp_path):
    ref = compute_reference(small.events, small.items, cfg.validation, source="slice")
    path = save_reference(ref, tmp_path / "ref" / "reference.json")
    assert load_reference(path) == ref
    assert ref["rows"] == SLICE and ref["source"] == "slice"
    assert len(ref["watch_ratio_quantiles"]["values"]) == len(cfg.validation.watch_ratio_quantiles)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"click_rate": 0.4}', ""])
def test_load_reference_rejects_a_corrupt_file_naming_the_path(tmp_path, content):
    path = tmp_path / "reference.json"
    path.write_text(content)
    with pytest.raises(DataError, match=str(path)):
        load_reference(path)


def test_load_reference_rejects_a_missing_file_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "absent.json")):
        load_reference(tmp_path / "absent.json")
