"""`onerec tokenize`: fit, refresh (encode or refit), errors without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from onerec.tokenizer.codebook import Codebook

REPO = Path(__file__).resolve().parents[2]


def _app():
    import typer

    from onerec.app.tokenizer_cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps `tokenize` addressed by name
    def noop() -> None:
        pass

    return app


def test_cli_fits_then_refresh_finds_nothing_new(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cb"
    args = ["tokenize", "--preset", "tiny", "--dataset", "kuairand",
            "--data-dir", str(REPO / "data" / "kuairand-pure"), "--out", str(out)]
    r = runner.invoke(_app(), args)
    assert r.exit_code == 0, r.output
    cb = Codebook.load(out)
    assert cb.n_items == 7583 and cb.version == 1
    assert (out / "embedder.npz").exists()
    r = runner.invoke(_app(), [*args, "--refresh"])
    assert r.exit_code == 0, r.output
    assert "nothing new" in r.output
    assert Codebook.load(out).fingerprint == cb.fingerprint


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    runner = CliRunner()
    r = runner.invoke(_app(), ["tokenize", "--dataset", "movielens", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--dataset: must be one of" in r.output
    r = runner.invoke(_app(), ["tokenize", "--preset", "tiny", "--dataset", "kuairand",
                               "--data-dir", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "data folder not found" in r.output
    r = runner.invoke(_app(), ["tokenize", "--refresh", "--dataset", "kuairand",
                               "--out", str(tmp_path / "none")])
    assert r.exit_code == 2 and "codebook folder not found" in r.output


def test_cli_refresh_encodes_new_videos_and_keeps_old_ids(tmp_path):
    import shutil

    import pandas as pd

    src = REPO / "data" / "kuairand-pure"
    before = tmp_path / "before"
    shutil.copytree(src, before)
    items = pd.read_parquet(src / "video_features.parquet")
    items.iloc[:7000].to_parquet(before / "video_features.parquet")  # 583 videos not yet uploaded
    runner, out = CliRunner(), tmp_path / "cb"
    base = ["tokenize", "--preset", "tiny", "--dataset", "kuairand", "--out", str(out),
            "--set", "tokenizer.refit_drift_threshold=100"]
    r = runner.invoke(_app(), [*base, "--data-dir", str(before)])
    assert r.exit_code == 0, r.output
    old = Codebook.load(out)
    r = runner.invoke(_app(), [*base, "--data-dir", str(src), "--refresh"])
    assert r.exit_code == 0, r.output
    assert "encoded 583 new item(s)" in r.output
    new = Codebook.load(out)
    assert new.n_items == 7583 and new.version == 1 and new.revision == 1
    assert np.array_equal(new.semantic_ids_of(old.item_ids), old.semantic_ids)


def test_cli_refresh_refits_when_new_videos_drift_and_writes_the_mapping(tmp_path):
    import shutil

    import pandas as pd

    src = REPO / "data" / "kuairand-pure"
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(src, before)
    shutil.copytree(src, after)
    items = pd.read_parquet(src / "video_features.parquet")
    items.iloc[:7000].to_parquet(before / "video_features.parquet")
    odd = items.copy()  # the new uploads look like nothing fitted: huge statistics
    stats = [c for c in odd.columns if c.endswith("_cnt")]
    odd.loc[7000:, stats] = odd.loc[7000:, stats].astype("float64") * 1e6
    odd.to_parquet(after / "video_features.parquet")
    runner, out = CliRunner(), tmp_path / "cb"
    base = ["tokenize", "--preset", "tiny", "--dataset", "kuairand", "--out", str(out),
            "--set", "tokenizer.refit_utilisation_ratio=0.0",  # reconstruction drift only
            "--set", "tokenizer.refit_drift_threshold=0.01"]  # tiny preset: drift is +0.06
    assert runner.invoke(_app(), [*base, "--data-dir", str(before)]).exit_code == 0
    old = Codebook.load(out)
    r = runner.invoke(_app(), [*base, "--data-dir", str(after), "--refresh"])
    assert r.exit_code == 0, r.output
    assert "refit" in r.output
    new = Codebook.load(out)
    assert new.version == 2 and new.parent_fingerprint == old.fingerprint
    mapping = json.loads((out / "mapping.json").read_text())
    assert mapping["n_common"] == 7000 and mapping["n_added"] == 583
    assert oct(out.stat().st_mode & 0o777) == "0o755"
