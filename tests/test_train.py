from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from onerec.checkpoint import CheckpointError, load_checkpoint
from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.stream import RequestStream, collate, requests_from_events, requests_from_sequences
from onerec.train import train

VOCAB = [8, 8, 8]


def fixture_data(cfg):
    ds = make_dataset(cfg.data)
    item_index = {int(v): i + 1 for i, v in enumerate(ds.items["video_id"])}
    g = torch.Generator().manual_seed(0)
    codes = torch.stack([torch.randint(0, k, (len(item_index),), generator=g) for k in VOCAB], 1)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), codes])
    reqs = requests_from_events(ds.events, item_index, cfg.data)
    return ds, item_index, codes, reqs


@pytest.fixture(scope="module")
def tiny():
    cfg = Config.from_preset("tiny", ["train.checkpoint_every=10", "train.log_every=5",
                                      "model.dropout=0.1"])
    return (cfg, *fixture_data(cfg))


def test_requests_hold_only_past_behaviour(tiny):
    _cfg, ds, item_index, _codes, reqs = tiny
    ev = ds.events
    assert len(reqs) > 0 and reqs.n_targets >= len(reqs)
    assert np.all(np.diff(reqs.time_ms) >= 0)
    inverse = {i: v for v, i in item_index.items()}
    for r in range(0, len(reqs), max(1, len(reqs) // 25)):
        t = reqs.time_ms[r]
        user_events = ev[(ev["time_ms"] < t)]
        for item in reqs.short[r][reqs.short[r] > 0]:
            assert inverse[int(item)] in set(user_events["video_id"])
        # targets are positive events at or after the request time
        tg = reqs.targets[reqs.target_offsets[r]:reqs.target_offsets[r + 1]]
        later = ev[(ev["time_ms"] >= t) & ((ev["long_view"] == 1) | (ev["is_like"] == 1))]
        assert set(inverse[int(i)] for i in tg) <= set(later["video_id"])


def test_requests_from_sequences_predict_each_next_item():
    cfg = Config.from_preset("tiny")
    reqs = requests_from_sequences({1: [3, 4, 5, 6]}, cfg.data)
    assert reqs.targets.tolist() == [4, 5, 6]
    assert reqs.short[-1][-3:].tolist() == [3, 4, 5] and reqs.short[0][-1] == 3


def test_collate_points_each_target_at_its_request(tiny):
    _cfg, _, _, codes, reqs = tiny
    batch = collate(reqs, np.arange(10), codes)
    assert batch.short.shape[0] == 10
    assert batch.target_codes.shape == (int(reqs.target_offsets[10]), 3)
    assert batch.target_req.max() == 9 and torch.all(batch.target_req.diff() >= 0)


def test_loss_falls_on_tiny_data(tiny, tmp_path):
    cfg, _, _, codes, reqs = tiny
    cfg = Config.from_preset("tiny", ["train.max_steps=60", "train.lr=3e-3", "train.log_every=10"])
    _, res = train(cfg, reqs, codes, VOCAB, tmp_path, resume=False)
    first, last = res.history[0]["ntp_loss"], res.history[-1]["ntp_loss"]
    assert last < first - 0.1
    assert res.history[-1]["samples_per_s"] > 0 and 0 < res.history[-1]["mfu"] < 1
    assert (tmp_path / "tb").is_dir()


def test_resume_gives_the_same_weights_and_the_same_next_batch(tiny, tmp_path):
    cfg, _, _, codes, reqs = tiny
    full, res_full = train(cfg, reqs, codes, VOCAB, tmp_path / "a", resume=False)
    _, res_part = train(cfg, reqs, codes, VOCAB, tmp_path / "b", resume=False, stop_after=10)
    assert res_part.steps == 10
    resumed, res_resumed = train(cfg, reqs, codes, VOCAB, tmp_path / "b", resume=True)
    assert res_resumed.steps == res_full.steps == cfg.train.max_steps
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    a = load_checkpoint(tmp_path / "a" / "checkpoint")["state"]["stream"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint")["state"]["stream"]
    assert a == b


def test_stream_state_round_trips_to_the_same_next_indices(tiny):
    *_, reqs = tiny
    s1 = RequestStream(reqs, 7, seed=3, shuffle_window=50)
    for _ in range(5):
        s1.next_indices()
    s2 = RequestStream(reqs, 7)
    s2.load_state_dict(s1.state_dict())
    for _ in range(30):  # crosses an epoch boundary
        assert np.array_equal(s1.next_indices(), s2.next_indices())
    assert s1.watermark_ms == s2.watermark_ms > 0


def test_checkpoint_with_another_codebook_is_refused(tiny, tmp_path):
    cfg, _, _, codes, reqs = tiny
    train(cfg, reqs, codes, VOCAB, tmp_path, resume=False, codebook_fingerprint="aaa",
          stop_after=10)
    with pytest.raises(CheckpointError, match="refusing codebook bbb"):
        train(cfg, reqs, codes, VOCAB, tmp_path, codebook_fingerprint="bbb")


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    from tests.test_train import fixture_data, VOCAB
    from onerec.config import Config
    from onerec.train import train
    cfg = Config.from_preset("tiny", ["train.max_steps=50", "train.checkpoint_every=5",
                                      "train.log_every=5"])
    _, _, codes, reqs = fixture_data(cfg)
    def log(rec):
        print("step", rec["step"], flush=True)
    model, res = train(cfg, reqs, codes, VOCAB, sys.argv[1], log=log)
    torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
""")


def test_kill_dash_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=root))
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    seen = 0
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break  # the script died before step 20: fail now, not at the deadline
        if line.startswith("step"):
            seen = int(line.split()[1])
            if seen >= 20:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 20 <= seen < 50, f"training did not reach step 20 (exit {proc.returncode})"
    assert (run_dir / "checkpoint" / "meta.json").exists()
    assert not (run_dir / "final.pt").exists()
    subprocess.run([sys.executable, str(script), str(run_dir)], check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    clean_dir = tmp_path / "clean"
    subprocess.run([sys.executable, str(script), str(clean_dir)], check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    a = torch.load(run_dir / "final.pt")
    b = torch.load(clean_dir / "final.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_time_budget_drives_the_cosine_schedule():
    from onerec.train import lr_at

    cfg = Config.from_preset("tiny", ["train.max_steps=1000", "train.warmup_steps=10",
                                      "train.lr=1e-3"])
    assert lr_at(20, cfg) > 0.99e-3  # early in the step schedule
    assert lr_at(20, cfg, time_frac=0.5) == pytest.approx(0.5e-3)  # half the budget spent
    assert lr_at(20, cfg, time_frac=1.0) == pytest.approx(0.0)
    assert lr_at(900, cfg, time_frac=0.1) < 0.1e-3  # steps ahead of time: steps decide


def test_the_budget_drives_the_schedule_only_once_it_binds():
    from onerec.train import budget_binds

    assert not budget_binds(10.0, 0, 100, 60.0)  # no pace yet
    assert not budget_binds(10.0, 20, 80, 60.0)  # 50 s at this pace: the steps fit
    assert budget_binds(10.0, 10, 90, 60.0)  # 100 s: the budget cuts the run
    # a slow first step (allocations) is not a pace: 463 more steps at 2 s would not fit
    assert not budget_binds(2.0, 1, 463, 300.0)
    assert budget_binds(301.0, 1, 463, 300.0)  # already past the budget: it binds


def test_a_slow_first_step_does_not_hand_the_schedule_to_the_clock(tiny, tmp_path):
    """The first steps pay allocations; a run whose later pace fits its budget keeps the step
    schedule (`budget_bound` false) and the weights of the run without a budget."""
    cfg, _ds, _idx, codes, reqs = tiny
    cfg = Config.from_preset("tiny", ["train.max_steps=14", "train.warmup_steps=1",
                                      "train.log_every=1", "train.checkpoint_every=100"])
    fast, res_fast = train(cfg, reqs, codes, VOCAB, tmp_path / "fast", resume=False)
    first = [True]

    def slow_start(rec: dict) -> None:  # step 1 takes 4.5 s: 14 such steps would not fit
        if first[0]:
            first[0] = False
            time.sleep(4.5)

    slow, res = train(cfg, reqs, codes, VOCAB, tmp_path / "slow", resume=False,
                      time_budget_s=30.0, log=slow_start)
    assert res.steps == 14 and not res.budget_bound and not res_fast.budget_bound
    for k, v in fast.state_dict().items():
        assert torch.equal(v, slow.state_dict()[k]), k


def test_a_slow_machine_trains_the_same_model_when_the_steps_fit(tiny, tmp_path):
    """A budget the run's steps fit in is a cap, not the schedule: the same run with a pause
    at every step (a busy machine) ends with the weights of the run without a budget."""
    cfg, _ds, _idx, codes, reqs = tiny
    cfg = Config.from_preset("tiny", ["train.max_steps=12", "train.warmup_steps=1",
                                      "train.log_every=1", "train.checkpoint_every=100"])
    fast, _ = train(cfg, reqs, codes, VOCAB, tmp_path / "fast", resume=False)
    slow, res = train(cfg, reqs, codes, VOCAB, tmp_path / "slow", resume=False,
                      time_budget_s=30.0, log=lambda rec: time.sleep(0.25))
    assert res.steps == 12
    for k, v in fast.state_dict().items():
        assert torch.equal(v, slow.state_dict()[k]), k


def test_schedule_spans_the_steps_the_run_takes():
    """A short run (a continuous-training cycle) warms up within a tenth of its steps, peaks,
    and decays to zero at its last step, whatever train.max_steps says."""
    from onerec.train import lr_at, warmup_for

    cfg = Config.from_preset("tiny", ["train.max_steps=2000", "train.warmup_steps=100",
                                      "train.lr=1e-3"])
    assert warmup_for(cfg, 40) == 4
    assert warmup_for(cfg, 5000) == 100
    assert lr_at(3, cfg, total_steps=40) == pytest.approx(1e-3)  # peak after 4 steps
    assert lr_at(39, cfg, total_steps=40) < 0.01e-3  # decayed at the end of the run
    assert lr_at(39, cfg) == pytest.approx(0.4e-3)  # a 2000-step schedule: still warming up
