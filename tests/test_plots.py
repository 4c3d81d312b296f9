"""The chart kinds of the run pages (`onerec.plots`): PNG bytes, None where there is nothing to
draw, and series that skip what a history did not record."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from onerec import plots
from tests.test_run_pages import assert_png

HISTORY = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0, "recall@10": 0.1},
           {"step": 3, "loss": float("nan")}, {"step": 4, "loss": 2.0, "recall@10": None}]


@pytest.mark.parametrize(("value", "ok"), [(1, True), (2.5, True), (np.float32(0.5), True),
                                           (True, False), (float("nan"), False),
                                           (math.inf, False), ("3", False), (None, False)])
def test_finite_means_a_real_number_not_a_bool_nan_or_infinity(value, ok):
    assert plots.finite(value) is ok


def test_series_keeps_the_records_with_a_finite_value():
    assert plots.series(HISTORY, "loss") == ([1.0, 2.0, 4.0], [4.0, 3.0, 2.0])
    assert plots.series(HISTORY, "recall@10") == ([2.0], [0.1])
    assert plots.missing_series(HISTORY, ["loss", "mfu", "recall@10"]) == ["mfu"]


def test_line_panels_draw_a_png_and_nothing_when_no_key_has_a_value():
    png = plots.line_panels({"a": HISTORY, "b": HISTORY}, [("loss", "loss"), ("mfu", "MFU")],
                            logy=["loss"], title="training")
    assert_png(png)
    assert plots.line_panels({"a": HISTORY}, [("mfu", "MFU")]) is None
    assert plots.line_panels({"a": HISTORY}, []) is None


def test_bars_and_intervals_draw_on_their_axes_and_mark_a_missing_value():
    fig, (left, right) = plots.figure(cols=2)
    plots.bars(left, ["pop", "onerec"], [0.12, None], title="ndcg@10", ylim=(0, 1))
    assert [t.get_text() for t in left.texts] == ["0.120", "n/a"]
    assert [round(p.get_height(), 2) for p in left.patches] == [0.12, 0.0]
    plots.intervals(right, ["control", "treatment"], [0.1, 0.2], [0.05, 0.15], [0.15, 0.25],
                    title="CTR", xlabel="rate", zero_line=True)
    rows = {t.get_text(): y for t, y in zip(right.get_yticklabels(), right.get_yticks(),
                                             strict=True)}
    assert rows["control"] > rows["treatment"]  # the first label is the top row
    png = plots.to_png(fig)
    assert_png(png)
    assert not plt.fignum_exists(fig.number)  # to_png closes the figure
