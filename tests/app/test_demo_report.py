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


def test_the_report_says_which_reranker_served_and_each_arms():
    serving = {"version": "v2", "repository": "/m/v2", "http_port": 1, "grpc_port": 2,
               "ready_s": 3.0, "reranker": "RM selection (/m/v2/onerec/1/reward_model, whole "
                                           "beam)", "server_exit_code": 0,
               "http_grpc_agree": True, "rows": []}
    arm = {"version": "v1", "users": 10, "requests": 20, "mean_reward": 0.5,
           "mean_p_click": 0.4, "reranker": "beam order"}
    report = {"config": {"preset": "tiny", "fingerprint": "x"}, "wall_s": {"total": 1.0},
              "serving": serving, "ab": {"decision": "wait", "before": "b", "requests": 20,
                                         "canary_percent": 10, "until": "u", "summary": "s",
                                         "arms": {"stable": arm}}}
    md = to_markdown_report(report)
    assert "re-ranking: RM selection (/m/v2/onerec/1/reward_model, whole beam)" in md
    assert "| stable | `v1` | beam order | 10 | 20 |" in md
