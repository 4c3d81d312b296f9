"""Helpers of the local pipeline run (`onerec.app.pipeline_local`): one terminal line per cycle,
and the output of kfp.local redirected into a log file."""

from __future__ import annotations

import logging
import sys

from onerec.app.pipeline_local import cycle_line, redirected

SUMMARY = {"run_id": "c2", "codebook": {"mode": "refresh", "n_new_items": 12},
           "warm_start": True, "n_requests": 900, "watermark_in_ms": 10, "steps": 5,
           "watermark_out_ms": 20, "gate": "promote", "candidate": {"ndcg@10": 0.12345},
           "production": {"ndcg@10": 0.1}, "published": "v2"}


def test_cycle_line_reports_start_gate_and_publication():
    line = cycle_line(SUMMARY, 7.5)
    assert line == ("c2: codebook refresh (+12 videos), warm start, 900 requests after watermark "
                    "10, 5 steps, watermark -> 20; gate promote (ndcg@10 0.1235 vs production "
                    "0.1000); published v2; 7.5 s")
    cold = cycle_line({**SUMMARY, "warm_start": False, "production": None, "published": None,
                       "candidate": {}}, 1)
    assert "cold start" in cold and "ndcg@10 nan)" in cold and "published -;" in cold


def test_redirected_appends_output_to_the_file_and_removes_the_handlers_left_on_it(tmp_path):
    log = tmp_path / "logs" / "kfp.log"
    root = logging.getLogger()
    before = list(root.handlers)
    with redirected(log):
        print("first")
        root.addHandler(logging.StreamHandler(sys.stdout))  # what kfp.local does
    with redirected(log):
        print("second", file=sys.stderr)
    assert log.read_text() == "first\nsecond\n"
    assert root.handlers == before


def test_redirected_writes_each_line_while_the_step_still_runs(tmp_path):
    """`onerec.progress.Follow` tails the file during a kfp.local step: a line the step's output
    carries (kfp.local prints it to the redirected stdout, without a flush) must be in the file
    before the step ends, not when 8 KB have gathered."""
    log = tmp_path / "kfp.log"
    with redirected(log):
        print("    progress pretrain step=100/464 loss=3.0938")  # no flush, as kfp.local's
        assert log.read_text() == "    progress pretrain step=100/464 loss=3.0938\n"


def test_redirected_to_none_leaves_the_output_alone(capsys):
    with redirected(None):
        print("shown")
    assert capsys.readouterr().out == "shown\n"
