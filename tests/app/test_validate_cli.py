"""`onerec validate` end to end on real files: exit codes and what is written."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from onerec.app.cli import app
from onerec.data import kuairand
from onerec.data.synthetic import make_dataset, write_folder

runner = CliRunner()


@pytest.fixture()
def small_real_copy(tmp_path, shipped_dir):
    """A small copy of the shipped sample in the KuaiRand layout (first 3,000 events)."""
    dst = tmp_path / "data"
    dst.mkdir()
    ev = kuairand.read_events(shipped_dir).head(3000)
    ev.to_parquet(dst / "log_0.parquet", index=False)
    for name in ("video_features.parquet", "user_features.parquet"):
        (dst / name).write_bytes((shipped_dir / name).read_bytes())
    return dst


def test_validate_passes_on_a_clean_copy_and_writes_the_report(small_real_copy, tmp_path):
    out = tmp_path / "report"
    res = runner.invoke(app, ["validate", str(small_real_copy), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["success"] is True and report["failures"] == []
    assert (out / "summary.md").read_text().strip()


def test_validate_fails_with_exit_1_naming_column_and_expectation(small_real_copy, tmp_path):
    ev = pd.read_parquet(small_real_copy / "log_0.parquet")
    ev.loc[ev.index[:10], "watch_ratio"] = -1.0
    ev.to_parquet(small_real_copy / "log_0.parquet", index=False)
    out = tmp_path / "report"
    res = runner.invoke(app, ["validate", str(small_real_copy), "--out", str(out)])
    assert res.exit_code == 1
    assert "watch_ratio" in res.stdout
    failures = json.loads((out / "report.json").read_text())["failures"]
    assert any(f["column"] == "watch_ratio" and "between" in f["expectation"] for f in failures)


@pytest.mark.parametrize("damage", ["missing_items", "corrupt_log", "missing_folder"])
def test_missing_or_corrupt_file_exits_2_and_writes_nothing(small_real_copy, tmp_path, damage):
    target = small_real_copy
    if damage == "missing_items":
        (small_real_copy / "video_features.parquet").unlink()
    elif damage == "corrupt_log":
        (small_real_copy / "log_0.parquet").write_bytes(b"not a parquet file")
    else:
        target = tmp_path / "nope"
    out = tmp_path / "report"
    res = runner.invoke(app, ["validate", str(target), "--out", str(out)])
    assert res.exit_code == 2
    assert "error:" in res.stderr
    assert not out.exists()


def test_write_reference_then_validate_against_it(tmp_path):
    data = write_folder(make_dataset(n_users=40, n_items=50, n_events=800), tmp_path / "d")
    ref = tmp_path / "ref.json"
    res = runner.invoke(app, ["validate", str(data), "--write-reference", str(ref)])
    assert res.exit_code == 0, res.output
    snapshot = json.loads(ref.read_text())
    assert 0.0 < snapshot["click_rate"] < 1.0 and snapshot["tag_distribution"]
    res = runner.invoke(app, ["validate", str(data), "--reference", str(ref),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "drift" in json.loads((tmp_path / "r" / "report.json").read_text())["suites"]


def test_pretrain_rejects_an_unknown_dataset():
    res = runner.invoke(app, ["pretrain", "--dataset", "movielens"])
    assert res.exit_code == 2 and "--dataset" in res.stderr
