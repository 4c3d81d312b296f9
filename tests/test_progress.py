"""onerec.progress: a bar on a terminal, plain lines (no escape codes) on a pipe, and what a
real training run and a followed kfp.local log show through it."""

from __future__ import annotations

import io
import math
import re

import pytest
from rich.console import Console

from onerec.config import Config
from onerec.progress import ENV, INTERVAL_ENV, Bar, Follow, Lines, Reporter, Status, make_view
from onerec.train import train
from tests.test_train import VOCAB, fixture_data

RECORDS = [{"step": s, "loss": 5.0 - s / 100, "samples_per_s": 1000.0 + s} for s in
           range(10, 101, 10)]


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    for name in (ENV, INTERVAL_ENV, "RANK"):
        monkeypatch.delenv(name, raising=False)


def pipe() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf), buf


def test_a_terminal_console_gets_a_rich_progress_bar():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    report = Reporter("pretrain", total=100, budget_s=300, console=console)
    assert isinstance(report.view, Bar)
    with report:
        for rec in RECORDS[:5]:
            report(rec)
        row = report.view.progress.tasks[0]
        assert (row.completed, row.total, row.description) == (50, 100, "pretrain")
        assert row.fields["info"].startswith("50/100 steps  loss 4.5000  1050.0 samples/s  ")
        assert "  eta " in row.fields["info"] and "budget left 5:00" in row.fields["info"]
        for rec in RECORDS[5:]:
            report(rec)
    out = buf.getvalue()
    assert "\x1b[" in out and "━" in out  # drawn with escape codes, a bar
    # what it leaves behind
    assert re.search(r"pretrain: 100/100 steps, loss 4\.0000, 1100\.0 samples/s, \d+:\d\d elapsed",
                     out)
    assert report.view.progress.tasks == []  # the finished row is gone


def test_a_pipe_gets_one_plain_line_per_record_with_step_loss_and_samples_per_s(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    console, buf = pipe()
    report = Reporter("pretrain", total=100, budget_s=300, console=console)
    assert isinstance(report.view, Lines)
    with report:
        for rec in RECORDS:
            report(rec)
    out = buf.getvalue()
    assert "\x1b[" not in out and "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 1 + len(RECORDS) + 1  # the plan, one per record, the end
    assert lines[0] == "progress pretrain step=0/100 elapsed=0:00 budget_left=5:00"
    for line, rec in zip(lines[1:-1], RECORDS, strict=True):
        assert line.startswith(f"progress pretrain step={rec['step']}/100 loss=")
        assert f"samples/s={rec['samples_per_s']:.1f}" in line and "budget_left=" in line
    assert lines[-1].endswith(" done")


def test_plain_lines_come_once_per_interval_not_once_per_record(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    console, buf = pipe()
    with Reporter("align", total=100, console=console) as report:
        for rec in RECORDS:
            report(rec)
    lines = buf.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["step=0/100", "step=100/100"]
    assert lines[-1].endswith(" done")


def test_samples_per_s_comes_from_the_batch_size_when_a_loop_does_not_log_it(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    console, buf = pipe()
    with Reporter("reward", total=20, batch_size=512, console=console) as report:
        report({"step": 10, "loss": 0.7})
        report({"step": 20, "loss": 0.6})
    parsed = [Status.parse(line) for line in buf.getvalue().splitlines()]
    assert all(s is not None for s in parsed)
    assert parsed[1].samples_per_s > 0 and parsed[2].loss == 0.6


def test_progress_off_prints_nothing_and_still_forwards_the_records(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    console, buf = pipe()
    seen = []
    with Reporter("pretrain", total=100, console=console, log=seen.append) as report:
        for rec in RECORDS:
            report(rec)
    assert buf.getvalue() == "" and seen == RECORDS


def test_plain_mode_prints_lines_in_a_terminal_too(monkeypatch):
    monkeypatch.setenv(ENV, "plain")
    assert isinstance(make_view(Console(file=io.StringIO(), force_terminal=True)), Lines)


def test_a_real_training_run_reports_its_steps_through_the_reporter(monkeypatch, tmp_path):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    cfg = Config.from_preset("tiny", ["train.max_steps=20", "train.log_every=5"])
    _, _, codes, reqs = fixture_data(cfg)
    console, buf = pipe()
    seen = []
    with Reporter("pretrain", total=20, budget_s=600, batch_size=cfg.train.batch_size,
                  console=console, log=seen.append) as report:
        _, res = train(cfg, reqs, codes, VOCAB, tmp_path, resume=False, max_steps=20,
                       time_budget_s=600, log=report)
    out = buf.getvalue()
    assert "\x1b[" not in out
    status = [Status.parse(line) for line in out.splitlines()]
    assert all(s is not None and s.stage == "pretrain" for s in status)
    assert [s.step for s in status] == [0, 5, 10, 15, 20, 20]  # plan, log_every, end
    assert status[-1].done and res.steps == 20
    for s, rec in zip(status[1:-1], res.history, strict=True):
        assert s.loss == pytest.approx(rec["loss"], abs=1e-4) and math.isfinite(s.loss)
        assert s.samples_per_s > 0 and s.budget_left_s is not None
    assert seen == res.history  # the caller's own log still gets every record


def test_status_lines_parse_back():
    s = Status("evaluate-candidate", step=512, total=3400, unit="user", samples_per_s=210.5,
               elapsed_s=2.4, budget_s=None)
    back = Status.parse("    " + s.line())  # kfp.local indents a step's streamed logs
    assert back is not None
    assert (back.stage, back.step, back.total, back.unit) == ("evaluate-candidate", 512, 3400,
                                                              "user")
    assert back.samples_per_s == 210.5 and Status.parse("no progress here") is None


def test_follow_shows_which_stage_of_which_cycle_runs_in_a_kfp_log(tmp_path):
    log = tmp_path / "kfp.log"
    log.write_text("before the run\n")
    buf = io.StringIO()
    follow = Follow(log, Lines(buf, interval_s=0), label="cycle 1/2 · ", poll_s=0.05)
    with follow, log.open("a") as f:
        f.write("10:25:51.898 - INFO - Executing task \x1b[96m'pretrain'\x1b[0m\n")
        f.write("    " + Status("pretrain", step=50, total=100, loss=4.2,
                                samples_per_s=800.0, elapsed_s=10, budget_s=60).line() + "\n")
        f.write("10:29:02.936 - INFO - Task \x1b[96m'pretrain'\x1b[0m finished with status "
                "\x1b[92mSUCCESS\x1b[0m\n")
        f.write("10:29:02.940 - INFO - Executing task \x1b[96m'evaluation-gate'\x1b[0m\n")
        f.write(Status("evaluate-candidate", step=256, total=512, unit="user").line() + "\n")
    out = buf.getvalue()
    assert "\x1b[" not in out and "before the run" not in out
    lines = out.splitlines()
    assert lines[0].startswith("progress cycle 1/2 · pretrain elapsed=")
    assert any(line.startswith("progress cycle 1/2 · pretrain step=50/100 loss=4.2000 "
                               "samples/s=800.0") for line in lines)
    assert any("cycle 1/2 · pretrain step=50/100" in line and line.endswith("done")
               for line in lines)
    assert any("cycle 1/2 · evaluation-gate · evaluate-candidate user=256/512" in line
               for line in lines)
    assert lines[-1].startswith("progress cycle 1/2 · evaluation-gate user=256/512")
    assert lines[-1].endswith("done")


def test_follow_reads_a_log_that_was_replaced_from_its_start_and_not_the_old_one(tmp_path):
    log = tmp_path / "kfp.log"
    log.write_text(Status("pretrain", step=7, total=9).line() + "\n" * 200)  # a previous run's
    buf = io.StringIO()
    with Follow(log, Lines(buf, interval_s=3600), poll_s=0.05):
        log.unlink()  # a fresh run clears its folder first
        log.write_text(Status("align", step=3, total=20).line() + "\n")
    lines = buf.getvalue().splitlines()
    assert [line.split()[1:3] for line in lines] == [["align", "step=3/20"]]


def test_a_new_stage_under_the_same_row_gets_its_line_at_once():
    buf = io.StringIO()
    view = Lines(buf, interval_s=3600)
    view.show("evaluation-gate", Status("evaluation-gate · evaluate-candidate", step=50, total=50))
    view.show("evaluation-gate", Status("evaluation-gate · evaluate-candidate", step=50, total=50))
    view.show("evaluation-gate", Status("evaluation-gate · evaluate-production", step=0, total=50))
    assert [line.split()[3] for line in buf.getvalue().splitlines()] == [
        "evaluate-candidate", "evaluate-production"]
