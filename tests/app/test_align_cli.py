"""`onerec align` refuses bad input before it trains anything (exit 2, no traceback)."""

from __future__ import annotations

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
