"""SASRec: training windows, config checks, training, early stopping, recommend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from onerec.baselines import fit_popularity, recommend, train_sasrec
from onerec.baselines.sasrec import SASRec, training_windows
from onerec.config import Config, ConfigError
from onerec.data.sequences import leave_one_out
from onerec.evaluate import rank_metrics

N_ITEMS = 30


def successor_sequences(n_users: int = 120, seed: int = 0) -> dict[int, list[int]]:
    """Item i is always followed by i + 1 (wrapping at N_ITEMS): a purely sequential task."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        start, length = int(rng.integers(0, N_ITEMS)), int(rng.integers(5, 12))
        seqs[u] = [(start + j) % N_ITEMS + 1 for j in range(length)]
    return seqs


def tiny_cfg(**changes):
    return dataclasses.replace(Config.from_preset("tiny").sasrec, **changes)


def test_training_windows_use_every_pair_once():
    x, y = training_windows({1: list(range(1, 12)), 2: [4, 5]}, max_len=4)
    pairs = sorted((int(a), int(b)) for a, b in zip(x.ravel(), y.ravel(), strict=True) if b > 0)
    expected = sorted([(i, i + 1) for i in range(1, 11)] + [(4, 5)])
    assert pairs == expected
    assert (x[:, -1] > 0).all()  # right-aligned: the last position is always an item


def test_sasrec_config_is_validated_with_the_key():
    with pytest.raises(ConfigError, match=r"^sasrec\.d_model"):
        Config.from_preset("tiny", ["sasrec.d_model=15", "sasrec.n_heads=2"])
    with pytest.raises(ConfigError, match=r"^sasrec\.norm"):
        Config.from_preset("tiny", ["sasrec.norm=middle"])


def test_sasrec_loss_falls_on_tiny_data():
    model = train_sasrec(successor_sequences(), N_ITEMS, tiny_cfg(max_epochs=8, lr=3e-3))
    losses = [e["loss"] for e in model.history]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("norm, activation", [("pre", "gelu"), ("post", "relu")])
def test_sasrec_beats_popularity_on_a_sequential_pattern(norm, activation):
    split = leave_one_out(successor_sequences(), max_history=8)
    cfg = tiny_cfg(norm=norm, activation=activation, max_epochs=30, lr=3e-3, dropout=0.1)
    model = train_sasrec(split.train, N_ITEMS, cfg, valid=split.valid)
    targets = [t for _, _, t in split.test]
    ours = rank_metrics(recommend(model, [h for _, h, _ in split.test], 5), targets, ks=(1, 5))
    pop = rank_metrics(fit_popularity(split.train).recommend(len(targets), 5), targets,
                       ks=(1, 5))
    assert ours["recall@1"] > 0.8
    assert ours["ndcg@5"] > pop["ndcg@5"] + 0.5
    assert any("valid_ndcg@10" in e for e in model.history)


def test_sasrec_is_deterministic_under_a_seed():
    seqs = successor_sequences(n_users=40)
    a = train_sasrec(seqs, N_ITEMS, tiny_cfg(max_epochs=2, dropout=0.2))
    b = train_sasrec(seqs, N_ITEMS, tiny_cfg(max_epochs=2, dropout=0.2))
    c = train_sasrec(seqs, N_ITEMS, tiny_cfg(max_epochs=2, dropout=0.2, seed=1))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.item_emb.weight, c.item_emb.weight)
    assert [e["loss"] for e in a.history] == [e["loss"] for e in b.history]


def test_early_stopping_keeps_the_best_validation_weights():
    split = leave_one_out(successor_sequences(n_users=40), max_history=8)
    logs = []
    model = train_sasrec(split.train, N_ITEMS, tiny_cfg(max_epochs=12, patience=2, lr=1e-2),
                         valid=split.valid, log=logs.append)
    assert logs == model.history
    best = max(e["valid_ndcg@10"] for e in model.history)
    assert model.history[model.best_epoch - 1]["valid_ndcg@10"] == best
    from onerec.baselines.sasrec import evaluate_rows
    assert evaluate_rows(model, split.valid, ks=(10,))["ndcg@10"] == pytest.approx(best)


def test_recommend_returns_k_distinct_items_in_the_catalogue():
    torch.manual_seed(0)
    model = SASRec(n_items=N_ITEMS, cfg=tiny_cfg())
    histories = [[1, 2, 3], [], list(range(1, 25)), [30]]
    recs = recommend(model, histories, k=10)
    assert len(recs) == len(histories)
    for row in recs:
        assert len(row) == 10 and len(set(row)) == 10
        assert all(1 <= i <= N_ITEMS for i in row)
    assert len(recommend(model, [[1]], k=N_ITEMS)[0]) == N_ITEMS  # padding id 0 never appears
    with pytest.raises(ValueError, match="k must be"):
        recommend(model, [[1]], k=N_ITEMS + 1)


def test_train_sasrec_rejects_items_outside_the_catalogue():
    with pytest.raises(ValueError, match="outside"):
        train_sasrec({1: [1, 2, 31]}, N_ITEMS, tiny_cfg())


def test_max_minutes_stops_training_early():
    model = train_sasrec(successor_sequences(n_users=40), N_ITEMS,
                         tiny_cfg(max_epochs=1000), max_minutes=0.0)
    assert len(model.history) == 1
