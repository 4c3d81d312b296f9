"""bench.ddp: the throughput arithmetic, the weight gap, and one timed run of the trainer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bench.ddp import (
    cpu_efficiency,
    max_abs_diff,
    step_targets,
    summarise,
    train_timed,
    window_rate,
)
from bench.training import Workload
from onerec.config import Config
from onerec.stream import RequestStream


def test_step_targets_counts_each_global_batch():
    off = np.array([0, 1, 3, 6, 7])  # requests hold 1, 2, 3, 1 targets
    assert step_targets(off, [np.array([0, 2]), np.array([1, 3]), np.array([3])]) == [4, 3, 1]


def test_window_rate_drops_the_first_window_and_counts_the_steps_after_it():
    stamps = [(0, 0.0), (2, 10.0), (4, 11.0), (6, 12.0)]  # the first window is slow (warm-up)
    targets = [100, 100, 5, 5, 5, 5]  # targets of steps 1..6
    r = window_rate(stamps, targets)
    assert r["steps"] == 4 and r["targets"] == 20
    assert r["samples_per_s"] == pytest.approx(20 / 2.0)
    assert r["step_ms"] == pytest.approx(500.0)
    assert window_rate(stamps, targets, skip=0)["samples_per_s"] == pytest.approx(220 / 12.0)
    with pytest.raises(ValueError, match="at least 3 stamps"):
        window_rate(stamps[:2], targets)
    with pytest.raises(ValueError, match="must increase"):
        window_rate([(0, 0.0), (2, 5.0), (4, 5.0)], targets)


def test_summarise_gives_medians_efficiency_and_speedups():
    runs = {"t2": [300.0, 100.0, 320.0], "t1": [200.0, 210.0, 190.0], "ddp": [300.0, 310.0, 1.0]}
    s = summarise(runs, ddp="ddp", single="t1", threaded="t2")
    assert s["median"] == {"t2": 300.0, "t1": 200.0, "ddp": 300.0}
    assert s["efficiency"] == pytest.approx(300 / 400)  # 2 ranks against 2 x one thread
    assert s["speedup_vs_threads"] == pytest.approx(1.0)
    assert s["speedup_vs_one_thread"] == pytest.approx(1.5)


def test_cpu_efficiency_compares_the_ranks_cpu_time_with_one_process():
    assert cpu_efficiency(0.36, 0.18) == pytest.approx(1.0)  # each rank does half the work
    assert cpu_efficiency(0.36, 0.24) == pytest.approx(0.75)  # a third more work in all


def test_max_abs_diff_names_the_tensor_with_the_largest_gap():
    a = {"w": torch.zeros(3), "b": torch.ones(2), "n": torch.tensor(4)}
    b = {"w": torch.tensor([0.0, 1e-3, -2e-3]), "b": torch.ones(2), "n": torch.tensor(4)}
    gap, name = max_abs_diff(a, b)
    assert name == "w" and gap == pytest.approx(2e-3)
    assert max_abs_diff(a, a) == (0.0, "")
    assert max_abs_diff(a, {**b, "n": torch.tensor(5)}) == (float("inf"), "n")
    with pytest.raises(ValueError, match="keys"):
        max_abs_diff(a, {"w": torch.zeros(3)})


def test_train_timed_stamps_every_logged_step_and_replays_the_global_batches(tmp_path):
    from tests.test_train import VOCAB, fixture_data

    cfg = Config.from_preset("tiny", ["train.log_every=2", "train.checkpoint_every=100"])
    _, _, codes, reqs = fixture_data(cfg)
    w = Workload("tiny", cfg, reqs, codes, VOCAB, 4096, {})
    r = train_timed(w, 6, tmp_path)
    assert [s for s, _ in r["stamps"]] == [0, 2, 4, 6]
    assert all(t1 > t0 for (_, t0), (_, t1) in itertools.pairwise(r["stamps"]))
    assert [s for s, _ in r["cpu_stamps"]] == [0, 2, 4, 6]
    assert all(t1 >= t0 for (_, t0), (_, t1) in itertools.pairwise(r["cpu_stamps"]))
    stream = RequestStream(reqs, cfg.train.batch_size, seed=cfg.train.seed, shuffle_window=4096)
    off = reqs.target_offsets
    want = [int((off[i + 1] - off[i]).sum()) for i in (stream.next_indices() for _ in range(6))]
    assert r["targets"] == want
    assert window_rate(r["stamps"], r["targets"])["steps"] == 4
    assert np.isfinite(r["final_loss"]) and r["state"]
