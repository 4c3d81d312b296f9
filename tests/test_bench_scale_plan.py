"""bench.scale_plan: the GPU count, one scale's row, and the model sizes it reads."""

from __future__ import annotations

import pytest

from bench.scale_plan import CATALOGUE_FREE, gpus_needed, model_size, plan_row


def test_gpus_needed_doubles_within_a_node_then_adds_whole_nodes():
    assert gpus_needed(2.0, 12, 8, 0.9) == (1, 2.0)  # one GPU fits: no DP loss
    n, h = gpus_needed(20.0, 12, 8, 0.9)  # 1 GPU: 20 h, 2 GPUs: 20 / 1.8 = 11.1 h
    assert n == 2 and h == pytest.approx(20 / 1.8)
    n, h = gpus_needed(100.0, 12, 8, 0.9)  # 8 GPUs: 13.9 h > 12: two nodes
    assert n == 16 and h == pytest.approx(100 / 14.4)
    n, h = gpus_needed(1000.0, 12, 8, 1.0)  # 1000 / 12 = 83.3 GPUs -> 11 nodes
    assert n == 88 and h <= 12
    assert gpus_needed(1000.0, 12, 8, 1.0)[0] - 8 < 1000 / 12  # one node fewer would not fit
    with pytest.raises(ValueError):
        gpus_needed(1.0, 12, 8, 1.5)


def test_plan_row_follows_the_formulas():
    size = {"flops_per_sample": 1e9, "context_tokens": 99, "levels": 1, "params": 1e9}
    r = plan_row(1000, size, requests_per_user=10, targets_per_request=2, mfu=0.5,
                 peak_flops=1e12, max_hours=12, gpus_per_node=8, dp_efficiency=1.0)
    assert r["samples_per_day"] == 20_000 and r["tokens_per_day"] == 2_000_000
    assert r["flops_per_day"] == 2e13
    assert r["gpu_hours_per_day"] == pytest.approx(2e13 / 5e11 / 3600)
    assert (r["gpus"], r["nodes"], r["gpus_per_node"]) == (1, 1, 1)
    assert r["samples_per_s_per_gpu"] == pytest.approx(500.0)
    assert r["train_state_gb"] == pytest.approx(16.0)


def test_model_size_counts_the_trainers_flops():
    s = model_size("small", CATALOGUE_FREE)
    assert s["context_tokens"] == 1 + 20 + 20 + 8 and s["levels"] == 3
    assert s["encoder_params"] < s["active_params"] < s["params"]  # MoE: top-2 of 4 experts
    dec = s["active_params"] - s["encoder_params"]  # an upper bound: embeddings are not counted
    assert s["flops_per_sample"] <= 6 * (s["encoder_params"] * 49 + dec * 3)
    assert s["flops_per_sample"] >= 6 * s["encoder_params"] * 49
