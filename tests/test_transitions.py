"""The transition memory: counting (last item -> target) pairs into each item's top successors,
and the beam re-ranking it gives generation, equal in the fast generator, the reference beam
search and the exported ONNX graph, and never adding an item the beam lacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.checkpoint import build_model, load_model
from onerec.config import Config, ConfigError
from onerec.items import ItemSpace
from onerec.pretrain import scorers_set
from onerec.recommend import recommend
from onerec.stream import requests_from_sequences
from onerec.train import train
from onerec.transitions import count_transitions, last_visible
from tests.export.test_artifact import (
    OVERRIDES,
    assert_exported_graph_equals_pytorch,
    make_codebook,
    users,
)
from tests.test_item_head import ranked_and_plain

SEQS = {1: [1, 2, 3, 4, 5, 6, 7], 2: [1, 2, 5], 3: [2, 3], 4: [9]}
CHAIN = ["model.transition_prior=1.0", "model.transition_neighbors=4"]


def data_cfg(causal: bool):
    return Config.from_preset("tiny", ["data.max_seq_len=4",
                                       f"model.causal_encoder={str(causal).lower()}"]).data


@pytest.mark.parametrize("causal", [False, True])
def test_pairs_are_counted_once_per_target_from_what_it_may_see(causal):
    reqs = requests_from_sequences(SEQS, data_cfg(causal), causal=causal)
    # every target's last visible item is the item before it in its user's sequence
    pairs = [(s[j - 1], s[j]) for s in SEQS.values() for j in range(1, len(s))]
    assert list(zip(last_visible(reqs).tolist(), reqs.targets.tolist(), strict=True)) == pairs
    table = count_transitions(reqs, 9, 2)
    assert table.next_items[1].tolist() == [2, 0] and table.next_counts[1].tolist() == [2, 0]
    # 2 -> 3 twice, 2 -> 5 once: most frequent first
    assert table.next_items[2].tolist() == [3, 5] and table.next_counts[2].tolist() == [2, 1]
    assert table.out_counts[2] == 3 and table.out_counts[7] == 0 and table.out_counts[9] == 0
    assert table.n_pairs == 7


def test_top_k_keeps_the_most_frequent_successors_and_counts_all_in_the_total():
    seqs = {u: [1, b] for u, b in enumerate([2, 3, 3, 4, 4, 4, 5])}
    table = count_transitions(requests_from_sequences(seqs, data_cfg(False)), 5, 2)
    assert table.next_items[1].tolist() == [4, 3] and table.next_counts[1].tolist() == [3, 2]
    assert table.out_counts[1] == 7  # the chain's denominator: every successor
    tie = count_transitions(requests_from_sequences({1: [1, 5], 2: [1, 3]}, data_cfg(False)),
                            5, 1)
    assert tie.next_items[1].tolist() == [3]  # ties: the smaller item index


def test_a_warm_start_adds_the_new_pairs_to_the_previous_table():
    cfg = data_cfg(False)
    old = count_transitions(requests_from_sequences({1: [1, 2, 3]}, cfg), 5, 3)
    new = count_transitions(requests_from_sequences({2: [1, 2], 3: [1, 4]}, cfg), 5, 3, prior=old)
    assert new.next_items[1].tolist() == [2, 4, 0] and new.next_counts[1].tolist() == [2, 1, 0]
    assert new.next_items[2].tolist() == [3, 0, 0] and new.out_counts[1] == 3
    with pytest.raises(ValueError, match="previous model has 5 items, this one 6"):
        count_transitions(requests_from_sequences({1: [1, 2]}, cfg), 6, 3, prior=old)
    with pytest.raises(ValueError, match=r"model\.transition_neighbors"):
        count_transitions(requests_from_sequences({1: [1, 2]}, cfg), 5, 0)


def test_config_names_the_bad_setting():
    with pytest.raises(ConfigError, match=r"model\.transition_prior"):
        Config.from_preset("tiny", ["model.transition_prior=-1"])
    with pytest.raises(ConfigError, match=r"model\.transition_neighbors"):
        Config.from_preset("tiny", ["model.transition_neighbors=0"])
    with pytest.raises(ConfigError, match=r"model\.transition_depth"):
        Config.from_preset("tiny", ["model.transition_depth=0"])
    with pytest.raises(ConfigError, match=r"model\.transition_decay"):
        Config.from_preset("tiny", ["model.transition_decay=1.5"])


def chain_model(causal: bool = True, seed: int = 0, extra: tuple[str, ...] = ()):
    """A tiny model whose transition table sends each history's last item to a successor the
    beam holds, so the chain has something to re-order."""
    cfg = Config.from_preset("tiny", [*OVERRIDES, *CHAIN, *extra,
                                      f"model.causal_encoder={str(causal).lower()}"])
    space = ItemSpace.from_codebook(make_codebook(seed=seed))
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    n = len(space)
    rng = np.random.default_rng(seed)
    seqs = {u: rng.integers(1, n + 1, 12).tolist() for u in range(300)}
    reqs = requests_from_sequences(seqs, cfg.data, causal=causal)
    model.set_transitions(count_transitions(reqs, n, cfg.model.transition_neighbors))
    return model, space, cfg


def test_without_counts_the_chain_keeps_the_beam_order():
    model, _, _ = chain_model()
    scores = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")]])
    items = torch.tensor([[3, 1, 2, 4]])
    out = model.transition_scores(torch.tensor([[0, 0]]), items, scores)  # no history
    torch.testing.assert_close(out[:, :3], scores[:, :3].log_softmax(-1)[:, :3])
    assert torch.isinf(out[0, 3]) and out[0, 3] < 0  # a dead beam stays dead


def test_a_known_successor_moves_up_by_its_count():
    model, _, _ = chain_model()
    last = int(torch.nonzero(model.out_counts).flatten()[0])
    succ, count = int(model.next_items[last, 0]), float(model.next_counts[last, 0])
    other = next(i for i in range(1, 60) if i not in model.next_items[last].tolist())
    scores = torch.tensor([[-0.1, -5.0]])  # the model prefers `other`
    beam = torch.tensor([[other, succ]])
    out = model.transition_scores(torch.tensor([[0, last]]), beam, scores)
    p = scores.softmax(-1)[0]
    total = float(model.out_counts[last]) + 1.0
    assert float(out[0, 0].exp()) == pytest.approx(float(p[0]) / total, rel=1e-5)
    assert float(out[0, 1].exp()) == pytest.approx((count + float(p[1])) / total, rel=1e-5)
    assert out[0, 1] > out[0, 0]
    # one item further back, its counts weigh transition_decay (0.1) as much; deeper, nothing
    back = model.transition_scores(torch.tensor([[last, 0]]), beam, scores)
    total = 0.1 * float(model.out_counts[last]) + 1.0
    assert float(back[0, 1].exp()) == pytest.approx((0.1 * count + float(p[1])) / total,
                                                    rel=1e-5)
    deeper = model.transition_scores(torch.tensor([[last, 0, 0]]), beam, scores)
    torch.testing.assert_close(deeper, scores.log_softmax(-1))


@pytest.mark.parametrize("causal", [False, True])
def test_the_chain_reorders_the_beam_and_adds_nothing_from_outside(causal):
    model, space, _ = chain_model(causal)
    batch = users(space, 4, seed=3)
    ranked, _ = ranked_and_plain(model, space, batch, transition_prior=0.0)
    with scorers_set(model, transition_prior=0.0):  # off, and no head: nothing re-ranks
        assert model.rank_beam(torch.zeros(1, 3, 32), batch.short[:1], ranked.items[:1],
                               ranked.scores[:1]) is None


def test_fast_reference_and_exported_graph_agree_with_the_chain_and_the_head(tmp_path):
    head = ("model.item_loss_weight=1.0", "model.item_score_weight=1.0")
    model, space, cfg = chain_model(True, seed=2, extra=head)
    with torch.no_grad():
        model.item_query.weight.normal_(0, 1.0)
    batch = users(space, 5, seed=4)
    fast = recommend(model, space, batch, beam_width=8, top_n=5)
    ref = recommend(model, space, batch, beam_width=8, top_n=5, fast=False)
    assert fast.items == ref.items and fast.legality == 1.0
    assert_exported_graph_equals_pytorch(model, space, cfg, tmp_path)


def test_training_fills_the_table_warm_starts_add_and_the_checkpoint_keeps_it(tmp_path):
    cfg = Config.from_preset("tiny", [*CHAIN, "model.causal_encoder=true", "train.max_steps=2",
                                      "train.warmup_steps=1"])
    space = ItemSpace.from_codebook(make_codebook())
    reqs = requests_from_sequences({u: [1 + u % 5, 2 + u % 7, 3] for u in range(20)}, cfg.data,
                                   causal=True)
    model, _ = train(cfg, reqs, space.codes, space.vocab_sizes, tmp_path / "a", resume=False,
                     codebook_fingerprint=space.fingerprint)
    want = count_transitions(reqs, len(space), 4)
    assert np.array_equal(model.transition_table().next_items, want.next_items)
    assert np.array_equal(model.transition_table().out_counts, want.out_counts)
    saved = load_model(tmp_path / "a" / "checkpoint", space.fingerprint).model
    assert np.array_equal(saved.transition_table().next_counts, want.next_counts)
    warm, _ = train(cfg, reqs, space.codes, space.vocab_sizes, tmp_path / "b", resume=False,
                    init_from=model)
    assert np.array_equal(warm.transition_table().out_counts, 2 * want.out_counts)
    with pytest.raises(ValueError, match="no transition memory"):
        build_model(Config.from_preset("tiny"), space.codes, space.vocab_sizes).set_transitions(
            want)


FEATURE = ("model.transition_feature=true", "model.item_loss_weight=1.0",
           "model.item_score_weight=1.0")


def feature_model(causal: bool = True, seed: int = 0):
    cfg = Config.from_preset("tiny", [*OVERRIDES, *FEATURE, "model.transition_neighbors=4",
                                      f"model.causal_encoder={str(causal).lower()}"])
    space = ItemSpace.from_codebook(make_codebook(seed=seed))
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5).eval()
    rng = np.random.default_rng(seed)
    seqs = {u: rng.integers(1, len(space) + 1, 12).tolist() for u in range(300)}
    reqs = requests_from_sequences(seqs, cfg.data, causal=causal)
    model.set_transitions(count_transitions(reqs, len(space), cfg.model.transition_neighbors))
    return model, space, cfg


def test_the_feature_needs_the_item_head():
    with pytest.raises(ConfigError, match=r"model\.transition_feature"):
        Config.from_preset("tiny", ["model.transition_feature=true"])


def test_the_feature_adds_gated_log_counts_and_leaves_the_own_pair_out_in_training():
    model, _, _ = feature_model()
    last = int(torch.nonzero(model.out_counts).flatten()[0])
    succ, count = model.next_items[last].tolist(), model.next_counts[last].tolist()
    prev = int(torch.nonzero(model.out_counts).flatten()[1])
    state = torch.randn(2, model.cfg.d_model)
    recent = torch.tensor([[last, prev], [0, 0]])
    with torch.no_grad():
        model.transition_gate.bias.copy_(torch.tensor([0.3, -1.0]))
        model.transition_gate.weight.normal_(0, 0.1)
        base = model.item_query(state) @ model.item_table().T
        w = torch.nn.functional.softplus(model.transition_gate(state))
        got = model.item_logits(state, recent)
        want = base.clone()
        for i, c in zip(succ, count, strict=True):
            if i > 0:
                want[0, i] += w[0, 0] * np.log1p(c)
        for i, c in zip(model.next_items[prev].tolist(), model.next_counts[prev].tolist(),
                        strict=True):
            if i > 0:
                want[0, i] += w[0, 1] * np.log1p(c)
        want[:, 0] = float("-inf")
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got[1, 1:], base[1, 1:])  # no history: the head alone
        # training: the target's own (last -> target) pair counts once less
        target = torch.tensor([succ[0], 1])
        train_logits = model.item_logits(state, recent, target)
        drop = float(w[0, 0] * (np.log1p(count[0]) - np.log1p(count[0] - 1)))
        assert float(got[0, succ[0]] - train_logits[0, succ[0]]) == pytest.approx(drop, rel=1e-4)
        other = [i for i in range(1, got.shape[1]) if i != succ[0]]
        torch.testing.assert_close(train_logits[0, other], got[0, other])


def test_the_gate_trains_with_the_item_loss():
    model, space, _ = feature_model()
    model.train()
    from tests.test_item_head import training_batch

    model(training_batch(space))["loss"].backward()
    assert model.transition_gate.bias.grad is not None
    assert model.transition_gate.weight.grad.abs().sum() > 0


def test_fast_reference_and_exported_graph_agree_with_the_feature(tmp_path):
    model, space, cfg = feature_model(True, seed=2)
    with torch.no_grad():
        model.item_query.weight.normal_(0, 1.0)
        model.transition_gate.bias.fill_(2.0)
    batch = users(space, 5, seed=4)
    fast = recommend(model, space, batch, beam_width=8, top_n=5)
    ref = recommend(model, space, batch, beam_width=8, top_n=5, fast=False)
    assert fast.items == ref.items and fast.legality == 1.0
    with scorers_set(model, item_score_weight=0.0):
        plain = recommend(model, space, batch, beam_width=8, top_n=5)
    assert plain.items != fast.items  # the head with the feature re-orders the beam
    assert_exported_graph_equals_pytorch(model, space, cfg, tmp_path)
