"""`onerec pipeline`: compiling the pipeline and checking the stage list before a run."""

from __future__ import annotations

import yaml


def test_cli_compile_writes_the_yaml(tmp_path):
    from typer.testing import CliRunner

    from onerec.app.cli import app

    res = CliRunner().invoke(app, ["pipeline", "compile", str(tmp_path / "x.yaml")])
    assert res.exit_code == 0, res.output
    assert "cluster variant" in res.output
    assert yaml.safe_load_all((tmp_path / "x.yaml").read_text())
    res = CliRunner().invoke(app, ["pipeline", "run", "--local", "--stages", "validate"])
    assert res.exit_code == 2 and "cannot be left out" in res.output
