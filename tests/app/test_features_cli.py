"""`onerec features`: errors name what is missing, with exit status 2."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from onerec.app.features_cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_get_names_a_missing_repo(tmp_path):
    missing = CliRunner().invoke(_app(), ["features", "get", "--preset", "tiny", "--repo",
                                          str(tmp_path / "nope"), "--user", "1"])
    assert missing.exit_code == 2
    assert "no feature_store.yaml" in " ".join(missing.output.split())


def test_a_bad_override_is_named_before_anything_runs(tmp_path):
    res = CliRunner().invoke(_app(), ["features", "get", "--preset", "tiny", "--repo",
                                      str(tmp_path), "--user", "1", "--set",
                                      "features.push_batch_events=0"])
    assert res.exit_code == 2
    assert "features.push_batch_events" in " ".join(res.output.split())
