from __future__ import annotations

import subprocess
import sys

import yaml
from typer.testing import CliRunner

from onerec.app.cli import app
from onerec.config import Config

runner = CliRunner()


def test_config_show_prints_yaml_that_loads_back():
    res = runner.invoke(app, ["config", "show", "--preset", "tiny", "--set", "model.d_model=48"])
    assert res.exit_code == 0, res.output
    body = "\n".join(line for line in res.stdout.splitlines() if not line.startswith("#"))
    cfg = Config.from_dict(yaml.safe_load(body))
    assert cfg.model.d_model == 48 and cfg.preset == "tiny"
    assert f"fingerprint: {cfg.fingerprint()}" in res.stdout


def test_config_save_writes_the_file(tmp_path):
    out = tmp_path / "cfg.yaml"
    res = runner.invoke(app, ["config", "save", str(out), "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert Config.from_file(out) == Config.from_preset("tiny")


def test_unknown_config_key_exits_2_naming_the_key():
    res = runner.invoke(app, ["config", "show", "--set", "model.depth=3"])
    assert res.exit_code == 2
    assert "model.depth: unknown key" in res.stderr


def test_data_summary_reports_the_shipped_sample(shipped_dir):
    res = runner.invoke(app, ["data", "summary", str(shipped_dir)])
    assert res.exit_code == 0, res.output
    assert "218,876" in res.stdout and "7,583" in res.stdout


def test_data_summary_on_a_missing_folder_exits_2(tmp_path):
    res = runner.invoke(app, ["data", "summary", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "data folder not found" in res.stderr


def test_python_dash_m_onerec_shows_help():
    res = subprocess.run([sys.executable, "-m", "onerec", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0
    for command in ("validate", "demo", "config", "data"):
        assert command in res.stdout


def test_every_command_takes_the_same_config_options():
    """--config / --preset / --set are declared once (`onerec.app.cli_options`): each command that
    builds a Config spells and documents them the same way, short flags included."""
    import re

    commands = [["config", "show"], ["align"], ["pipeline", "run"], ["pipeline", "step"],
                ["features", "apply"], ["features", "get"]]
    for cmd in commands:
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert res.exit_code == 0, cmd
        text = re.sub(r"\s+", " ", res.output.replace("│", " "))
        for flag in ("--config -c", "--preset -p", "--set -s"):
            assert flag in text, (cmd, flag)
        assert "repeatable, applied in order" in text, cmd


def test_a_bad_override_is_named_the_same_way_everywhere():
    for cmd in (["config", "show"], ["features", "apply"]):
        res = runner.invoke(app, [*cmd, "--preset", "tiny", "--set", "model.nope=1"])
        assert res.exit_code != 0 and "model.nope" in res.output, cmd
