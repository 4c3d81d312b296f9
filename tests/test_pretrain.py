"""The pretraining recipes end to end on tiny data: codebook -> requests -> train -> evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onerec.config import Config
from onerec.data.sequences import SequenceData
from onerec.data.synthetic import make_dataset, write_folder
from onerec.evaluate import rank_metrics_multi, test_targets
from onerec.pretrain import run_kuairand, run_sequences

WORDS = ["red", "blue", "green", "matte", "gloss", "shampoo", "lipstick", "cream", "oil", "soap"]


@pytest.fixture(scope="module")
def tiny_sequences():
    rng = np.random.default_rng(0)
    n_items = 40
    # strong sequential pattern: after item i comes i + 1 (wrapping), with noise
    seqs = {}
    for u in range(1, 61):
        start = int(rng.integers(1, n_items + 1))
        seqs[u] = [((start + t - 1) % n_items) + 1 for t in range(int(rng.integers(5, 9)))]
    text = {i: f"{WORDS[i % 10]} {WORDS[(i // 10) % 10]} item" for i in range(1, n_items + 1)}
    return SequenceData("toy", seqs, n_items, text)


def test_sequence_recipe_trains_evaluates_and_beats_chance(tiny_sequences, tmp_path):
    cfg = Config.from_preset("tiny", ["tokenizer.codebook_size=4", "train.max_steps=150",
                                      "train.lr=3e-3", "train.batch_size=32"])
    res = run_sequences(cfg, tiny_sequences, tmp_path, beam_width=10, eval_every=50, n_valid=30)
    m = res["metrics"]
    assert set(m) >= {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "legality", "coverage@10"}
    assert m["legality"] == 1.0  # constrained decoding
    assert m["recall@10"] > 3 * 10 / 40 * 0.5  # well above random (0.25 for 10 of 40)
    assert len(res["recs"]) == 60 and all(len(r["recs"]) <= 10 for r in res["recs"])
    assert (tmp_path / "codebook" / "codebook.json").exists()
    assert json.loads((tmp_path / "train" / "checkpoint" / "meta.json").read_text())["step"] > 0
    assert any("valid_ndcg@10" in h for h in res["history"])


def test_kuairand_recipe_runs_on_a_temporal_split(tmp_path):
    cfg = Config.from_preset("tiny", ["data.test_days=2", "train.max_steps=20",
                                      "tokenizer.codebook_size=4"])
    data = write_folder(make_dataset(cfg.data, n_events=3000), tmp_path / "data")
    res = run_kuairand(cfg, data, tmp_path / "run", beam_width=8)
    cut = res["test_events"]["time_ms"].min()
    assert res["train_events"]["time_ms"].max() < cut
    assert res["n_test_users"] > 0 and res["metrics"]["legality"] == 1.0
    assert len(res["recs_items"]) == res["n_test_users"] == len(res["users"])
    # the metrics are those of the lists it returned, on each user's held-out positives
    assert res["targets"] == [test_targets(res["test_events"])[u] for u in res["users"]]
    again = rank_metrics_multi(res["recs_items"], res["targets"], ks=(5, 10))
    for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert res["metrics"][k] == pytest.approx(again[k]), k
    # every list: distinct videos, as many as the beam of 8 holds
    assert all(0 < len(r) <= 8 and len(set(r)) == len(r) for r in res["recs_items"])
