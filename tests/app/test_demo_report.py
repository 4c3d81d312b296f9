"""The demo report (`onerec.app.demo_report`): markdown and the terminal summary, also for a run
that stopped early."""

from __future__ import annotations

import json
from pathlib import Path

from onerec.app.demo_report import summary_lines, to_markdown_report, write


def test_partial_report_says_where_it_stopped():
    report = {"config": {"preset": "tiny", "fingerprint": "x"}, "wall_s": {"total": 1.0},
              "error": "cycle-1 failed: validate: data validation failed"}
    md = to_markdown_report(report)
    assert "**failed**: cycle-1 failed" in md and "## Wall times" in md
    assert "wall time: 1.0 s" in summary_lines(report)


def test_write_saves_the_json_and_the_markdown_beside_it(tmp_path):
    report = {"config": {"preset": "tiny", "fingerprint": "x"}, "wall_s": {"total": 2.0},
              "out": Path("/runs/demo")}
    js, md = write(report, tmp_path)
    back = json.loads(js.read_text())
    assert back["out"] == "/runs/demo"  # a path is written as its text
    assert md.read_text() == to_markdown_report(report, tmp_path)
    assert "incomplete (stopped early)" in md.read_text()  # no A/B section: it did not finish
