"""The continuous-training report (`onerec.app.cycle_report`) from a run's stage records, also
for a cycle that stopped part way."""

from __future__ import annotations

import json

from onerec import registry
from onerec.app.cycle_report import cycle_summary, to_markdown, write_report


def _stopped_cycle(root) -> None:
    """c1: validate ran on 100 events, the codebook failed, nothing after it ran."""
    registry.record(root, "c1", "validate", {"status": "ran", "wall_s": 2.0, "result": {
        "until": "2022-04-26", "n_batch_events": 100}})
    registry.record(root, "c1", "codebook", {"status": "failed", "error": "boom", "wall_s": 1.0})


def test_a_stopped_cycle_says_which_stage_failed_and_which_were_not_reached(tmp_path):
    _stopped_cycle(tmp_path)
    c = cycle_summary(tmp_path, "c1")
    assert c["stages"]["validate"] == "ran" and c["stages"]["codebook"] == "failed"
    assert c["stages"]["pretrain"] == c["stages"]["publish"] == "not reached"
    assert c["failed"] == {"codebook": "boom"}
    assert (c["until"], c["batch_events"], c["gate"], c["published"]) == (
        "2022-04-26", 100, None, None)
    md = to_markdown([c])
    assert "| c1 | ran (2 s) | failed (1 s) | not reached |" in md
    assert "c1: **codebook failed**: boom" in md
    assert "| c1 | 2022-04-26 | validate | 100 |" in md


def test_write_report_writes_json_and_markdown_with_the_extra_fields(tmp_path):
    _stopped_cycle(tmp_path / "state")
    js, md = write_report(tmp_path / "state", ["c1", "c2"], tmp_path / "out", {"wall_s": 3.5})
    report = json.loads(js.read_text())
    assert [c["run_id"] for c in report["cycles"]] == ["c1", "c2"] and report["wall_s"] == 3.5
    assert set(report["cycles"][1]["stages"].values()) == {"not reached"}  # c2 never ran
    assert md.read_text().startswith("# Continuous training: cycles")
