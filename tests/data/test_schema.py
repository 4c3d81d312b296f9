"""The event, item and user schemas: `conform`, `Dataset.summary`, `empty_events`."""

from __future__ import annotations

import pandas as pd
import pytest

from onerec.data import EVENT_COLUMNS, DataError
from onerec.data.schema import ITEM_COLUMNS, Dataset, conform, empty_events
from onerec.data.synthetic import make_dataset


def test_conform_names_the_missing_column_and_the_bad_cast():
    ev = make_dataset(n_users=5, n_items=5, n_events=20).events
    with pytest.raises(DataError, match=r"events: missing column\(s\) \['long_view'\]"):
        conform(ev.drop(columns="long_view"), EVENT_COLUMNS, "events")
    bad = ev.astype({"user_id": "object"})
    bad.loc[0, "user_id"] = "alice"
    with pytest.raises(DataError, match=r"events\.user_id: cannot cast to int64"):
        conform(bad, EVENT_COLUMNS, "events")
    nulls = ev.astype({"video_id": "Int64"})
    nulls.loc[0, "video_id"] = pd.NA
    with pytest.raises(DataError, match=r"events\.video_id: 1 null value"):
        conform(nulls, EVENT_COLUMNS, "events")


def test_conform_orders_the_columns_keeps_extras_on_request_and_blanks_missing_strings():
    items = pd.DataFrame({"upload_date": [20220426], "extra": ["x"], "tag": [None],
                          "video_id": [3], "author_id": [9], "duration_ms": [1.5],
                          "upload_type": ["Web"]}, index=[7])
    out = conform(items, ITEM_COLUMNS, "items")
    assert list(out.columns) == list(ITEM_COLUMNS) and list(out.index) == [0]
    assert {c: str(t) for c, t in out.dtypes.items()} == ITEM_COLUMNS
    assert out.loc[0, "tag"] == ""
    kept = conform(items, ITEM_COLUMNS, "items", keep_extra=True)
    assert list(kept.columns) == [*ITEM_COLUMNS, "extra"] and kept.loc[0, "extra"] == "x"


def test_summary_counts_a_dataset_and_an_empty_one():
    ds = make_dataset(n_users=6, n_items=8, n_events=50, seed=2)
    s = ds.summary()
    assert (s["events"], s["videos_in_catalogue"]) == (50, len(ds.items)) == (ds.n_events, 8)
    assert s["users"] == ds.events["user_id"].nunique() <= 6
    assert s["first_time_ms"] <= s["last_time_ms"]
    assert s["click_rate"] == round(float(ds.events["is_click"].mean()), 4)
    empty = Dataset("none", empty_events(), ds.items, ds.users)
    assert {c: str(t) for c, t in empty.events.dtypes.items()} == EVENT_COLUMNS
    assert empty.summary()["events"] == 0 and empty.summary()["click_rate"] == 0.0
