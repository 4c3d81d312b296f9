"""`run_alignment`, what `onerec align` runs: the reward model (trained and saved, or loaded),
then ECPO from a pretrained checkpoint; and a killed `onerec align` resumed by running it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onerec.alignment import run_alignment
from onerec.checkpoint import load_checkpoint
from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.reward import TASKS, load_reward_model
from onerec.tokenizer.codebook import Codebook
from tests.test_ecpo import assert_same_state


@pytest.fixture(scope="module")
def kuairand_pretrained(tmp_path_factory):
    """A tiny pretrained checkpoint and its codebook on a synthetic KuaiRand-layout folder."""
    from onerec.data.synthetic import write_folder
    from onerec.pretrain import run_kuairand

    tmp = tmp_path_factory.mktemp("pretrained")
    cfg = Config.from_preset("tiny", ["data.test_days=2", "train.max_steps=5",
                                      "tokenizer.codebook_size=4"])
    data = write_folder(make_dataset(cfg.data, n_events=2000), tmp / "data")
    run_kuairand(cfg, data, tmp / "pre", beam_width=4, max_test_users=5)
    return data, tmp / "pre"


def test_run_alignment_trains_and_saves_the_reward_model_then_aligns(tmp_path,
                                                                    kuairand_pretrained):
    data, pre = kuairand_pretrained
    ckpt, cb = pre / "train" / "checkpoint", pre / "codebook"
    cfg = Config.from_preset("tiny", ["data.test_days=2"])
    logged: list[dict] = []
    res = run_alignment(cfg, data, ckpt, cb, tmp_path / "a", steps=2, log=logged.append)
    # what `onerec align` prints and writes to metrics.json
    assert res["algorithm"] == "ecpo" and res["align_steps"] == 2 and res["align_s"] > 0
    heldout = res["reward_model"]["heldout"]
    assert set(heldout) == {*TASKS, "pscore"}
    assert {"auc", "ece", "mean_pred", "mean_obs"} <= set(heldout["click"])
    assert res["reward_model"]["n_train"] > 0 and res["reward_model"]["n_heldout"] > 0
    assert res["last"]["step"] == 2 and "pscore" in res["last"]
    json.dumps(res)  # a plain dict
    # the reward model is saved beside the run, tied to the checkpoint's codebook
    fingerprint = Codebook.load(cb).fingerprint
    load_reward_model(tmp_path / "a" / "reward_model", fingerprint)
    assert res["checkpoint"] == str(tmp_path / "a" / "align" / "checkpoint")
    assert load_checkpoint(res["checkpoint"])["state"]["step"] == 2
    assert any("pg_loss" in r for r in logged) and any("loss" in r and "pg_loss" not in r
                                                       for r in logged)  # both phases logged
    # a given reward model is loaded, not trained again; early_clip false is plain GRPO
    grpo = Config.from_preset("tiny", ["data.test_days=2", "align.early_clip=false"])
    again = run_alignment(grpo, data, ckpt, cb, tmp_path / "b", steps=1,
                          reward_model=tmp_path / "a" / "reward_model")
    assert again["reward_model"] == {"loaded": str(tmp_path / "a" / "reward_model")}
    assert not (tmp_path / "b" / "reward_model").exists()
    assert again["algorithm"] == "grpo" and again["align_steps"] == 1
    assert again["config_fingerprint"] != res["config_fingerprint"]


ROOT = Path(__file__).resolve().parents[1]
KILL_AT, ROUNDS = 10, 60  # checkpoints every 4 rounds: one at round 8 exists when 10 is logged


def _align_cmd(data: Path, pre: Path, out: Path) -> list[str]:
    sets = ["data.test_days=2", f"align.steps={ROUNDS}", "align.checkpoint_every=4",
            "align.log_every=1"]
    return [sys.executable, "-m", "onerec", "align", "--checkpoint",
            str(pre / "train" / "checkpoint"), "--codebook", str(pre / "codebook"),
            "--data-dir", str(data), "--out", str(out), "--preset", "tiny",
            *[a for kv in sets for a in ("--set", kv)]]


def test_kill_dash_9_during_onerec_align_then_rerun_resumes_exactly(tmp_path, kuairand_pretrained):
    """`onerec align` killed with SIGKILL after a checkpoint, then run again with the same
    command: it resumes (reward model reused, alignment from the checkpoint) and its final
    checkpoint equals an uninterrupted run's bit for bit: weights, optimizer, RNG states, the
    sampler, the stream position (the next batch) and the history."""
    data, pre = kuairand_pretrained
    path = [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "500", "OMP_NUM_THREADS": "1", "ONEREC_NO_TUNING": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_align_cmd(data, pre, killed), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    seen, lines = 0, []
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("round"):
            seen = int(line.split()[1])
            if seen >= KILL_AT:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and KILL_AT <= seen < ROUNDS, "".join(lines[-20:])
    ck = killed / "align" / "checkpoint"
    assert 4 <= json.loads((ck / "meta.json").read_text())["step"] < ROUNDS
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(_align_cmd(data, pre, killed), capture_output=True, text=True,
                             env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming: reusing the reward model this run trained" in resumed.stdout
    assert f"resuming alignment from {ck} at round" in resumed.stdout
    clean = tmp_path / "clean"
    done = subprocess.run(_align_cmd(data, pre, clean), capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming" not in done.stdout
    a = load_checkpoint(killed / "align" / "checkpoint")["state"]
    b = load_checkpoint(clean / "align" / "checkpoint")["state"]
    assert a["step"] == b["step"] == ROUNDS
    assert_same_state(a, b)
    for run in (killed, clean):
        assert json.loads((run / "metrics.json").read_text())["align_steps"] == ROUNDS


