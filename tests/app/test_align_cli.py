"""`onerec align` refuses bad input before it trains anything (exit 2, no traceback), and hands
its options to `run_alignment` (tested in tests/test_alignment.py) and writes what it returns."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from onerec.app.align_cli import register


def _invoke(*args: str):
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps `align` addressed by name
    def noop() -> None:
        pass

    res = CliRunner().invoke(app, ["align", *args])
    return res.exit_code, " ".join(res.output.split())  # the console wraps long paths


def test_a_missing_checkpoint_or_codebook_folder_is_named(tmp_path):
    (tmp_path / "ck").mkdir()
    out = tmp_path / "run"
    code, text = _invoke("--checkpoint", str(tmp_path / "nope"), "--codebook",
                         str(tmp_path / "ck"), "--out", str(out))
    assert code == 2 and f"--checkpoint: {tmp_path / 'nope'} is not a folder" in text
    code, text = _invoke("--checkpoint", str(tmp_path / "ck"), "--codebook",
                         str(tmp_path / "cb"), "--out", str(out))
    assert code == 2 and f"--codebook: {tmp_path / 'cb'} is not a folder" in text
    assert not out.exists()  # refused before any training


def test_a_bad_config_key_is_named(tmp_path):
    code, out_text = _invoke("--checkpoint", str(tmp_path), "--codebook", str(tmp_path),
                             "--preset", "tiny", "--set", "align.nope=1")
    assert code == 2 and "error: config:" in out_text and "align.nope" in out_text


def test_align_runs_run_alignment_with_its_options_and_writes_the_result(tmp_path, monkeypatch):
    import onerec.alignment

    calls = []
    result = {"reward_model": {"loaded": "rm"}, "algorithm": "grpo", "align_steps": 3,
              "align_s": 1.5, "checkpoint": "ck", "last": {}}

    def fake_run_alignment(cfg, data_dir, checkpoint, codebook, out, **kw):
        calls.append((cfg, data_dir, checkpoint, codebook, out, kw))
        return result

    monkeypatch.setattr(onerec.alignment, "run_alignment", fake_run_alignment)
    (tmp_path / "ck").mkdir()
    (tmp_path / "cb").mkdir()
    common = ["--checkpoint", str(tmp_path / "ck"), "--codebook", str(tmp_path / "cb"),
              "--data-dir", str(tmp_path / "data"), "--preset", "tiny"]
    code, text = _invoke(*common, "--out", str(tmp_path / "run"), "--grpo", "--steps", "3",
                         "--reward-model", str(tmp_path / "rm"), "--set", "align.lr=0.001")
    assert code == 0, text
    [(cfg, data_dir, checkpoint, codebook, out, kw)] = calls
    assert (data_dir, checkpoint, codebook, out) == (tmp_path / "data", tmp_path / "ck",
                                                     tmp_path / "cb", tmp_path / "run")
    assert cfg.align.early_clip is False and cfg.align.lr == 0.001
    assert kw["steps"] == 3 and kw["reward_model"] == tmp_path / "rm" and kw["resume"] is True
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result
    assert "grpo: 3 rounds" in text
    # an invalid value is refused before anything runs
    code, text = _invoke(*common, "--out", str(tmp_path / "bad"), "--set", "align.clip_eps=0")
    assert code == 2 and "align.clip_eps" in text
    assert len(calls) == 1 and not (tmp_path / "bad").exists()
