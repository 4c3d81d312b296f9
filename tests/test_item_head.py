"""The item head: an auxiliary next-item loss (full softmax over the catalogue, tied item
embeddings) and the beam re-ranking it gives generation, equal in the fast generator, the
reference beam search and the exported ONNX graph, and never adding an item the beam lacks."""

from __future__ import annotations

import pytest
import torch

from onerec.checkpoint import build_model
from onerec.config import Config, ConfigError
from onerec.generate import generate
from onerec.items import ItemSpace
from onerec.model import Batch
from onerec.pretrain import scorers_set
from onerec.recommend import recommend
from onerec.trie import ItemTrie
from tests.export.test_artifact import (
    OVERRIDES,
    assert_exported_graph_equals_pytorch,
    make_codebook,
    users,
)

HEAD = ["model.item_loss_weight=1.0", "model.item_score_weight=1.0"]


def head_model(causal: bool, seed: int = 0, extra: tuple[str, ...] = ()):
    cfg = Config.from_preset("tiny", [*OVERRIDES, *HEAD, *extra,
                                      f"model.causal_encoder={str(causal).lower()}"])
    space = ItemSpace.from_codebook(make_codebook(seed=seed))
    model = build_model(cfg, space.codes, space.vocab_sizes, n_user_buckets=5)
    with torch.no_grad():  # a head that is not uniform, so re-ranking has something to do
        model.item_query.weight.normal_(0, 1.0)
        model.item_emb.weight.normal_(0, 1.0)
    return model.eval(), space, cfg


def training_batch(space: ItemSpace) -> Batch:
    b = users(space, 3, seed=1)
    items = torch.tensor([1, 2, 3, 4, 5])
    return Batch(b.user, b.short, b.pos, b.long, target_codes=space.codes[items],
                 target_req=torch.tensor([0, 0, 1, 2, 2]),
                 target_len=torch.tensor([1, 4, 8, 2, 0]), target_items=items)


@pytest.mark.parametrize("causal", [False, True])
def test_item_loss_is_a_full_softmax_over_the_catalogue_and_trains_the_head(causal):
    model, space, _ = head_model(causal)
    model.train()
    batch = training_batch(space)
    out = model(batch)
    assert set(out) >= {"loss", "ntp_loss", "item_loss"}
    expected = out["ntp_loss"] + 0.01 * out["balance_loss"] + out["item_loss"]
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert model.item_query.weight.grad.abs().sum() > 0
    # the loss is the cross-entropy of the targets among every item (padding excluded)
    memory, _ = model.encode(batch)
    state = model.user_state(memory, batch.target_req, batch.short.shape[1], batch.target_len)
    logits = model.item_logits(state)
    assert logits.shape == (5, len(space) + 1) and torch.isinf(logits[:, 0]).all()


def test_without_target_items_the_item_loss_says_what_is_missing():
    model, space, _ = head_model(False)
    b = training_batch(space)
    with pytest.raises(ValueError, match="target_items"):
        model(Batch(b.user, b.short, b.pos, b.long, b.target_codes, b.target_req, b.target_len))


def test_no_item_head_by_default():
    cfg = Config.from_preset("tiny", OVERRIDES)
    space = ItemSpace.from_codebook(make_codebook())
    model = build_model(cfg, space.codes, space.vocab_sizes)
    assert model.item_query is None
    assert model.rank_beam(torch.zeros(1, 3, 32), torch.zeros(1, 8, dtype=torch.long),
                           torch.ones(1, 4, dtype=torch.long), torch.zeros(1, 4)) is None


def ranked_and_plain(model, space: ItemSpace, batch: Batch, **off: float):
    """The beam of 8 generated with the model's scorers, and with `off` (e.g.
    item_score_weight=0) set; asserts the scorers re-order it and add nothing from outside."""
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    ranked = generate(model, batch, beam_width=8, trie=trie)
    with scorers_set(model, **off):
        plain = generate(model, batch, beam_width=8, trie=trie)
    assert not torch.equal(ranked.items, plain.items)  # the scorer changed some order
    for u in range(batch.short.shape[0]):
        assert sorted(ranked.items[u].tolist()) == sorted(plain.items[u].tolist())
    assert (ranked.scores[:, :-1] >= ranked.scores[:, 1:]).all()  # best first
    return ranked, plain


@pytest.mark.parametrize("causal", [False, True])
def test_reranking_reorders_the_beam_and_adds_nothing_from_outside(causal):
    model, space, _ = head_model(causal)
    batch = users(space, 4, seed=3)
    ranked, plain = ranked_and_plain(model, space, batch, item_score_weight=0.0)
    # each beam's score is its log-probability plus the head's log-probability of its item
    with torch.no_grad():
        memory, _ = model.encode(batch)
        seen = (batch.short > 0).sum(1) if causal else None
        state = model.user_state(memory, torch.arange(4), batch.short.shape[1], seen)
        head = model.item_logits(state).log_softmax(-1)
    for u in range(4):
        by_item = dict(zip(plain.items[u].tolist(), plain.scores[u].tolist(), strict=True))
        for i, s in zip(ranked.items[u].tolist(), ranked.scores[u].tolist(), strict=True):
            assert s == pytest.approx(by_item[i] + float(head[u, i]), abs=1e-4)


def test_fast_and_reference_recommendations_agree_with_the_head():
    model, space, _ = head_model(True)
    batch = users(space, 5, seed=4)
    fast = recommend(model, space, batch, beam_width=8, top_n=5)
    ref = recommend(model, space, batch, beam_width=8, top_n=5, fast=False)
    assert fast.items == ref.items
    assert fast.legality == ref.legality == 1.0


def test_exported_graph_ranks_like_pytorch_with_the_head(tmp_path):
    model, space, cfg = head_model(True, seed=2)
    assert_exported_graph_equals_pytorch(model, space, cfg, tmp_path)


MARKOV = ("model.markov_head=true",)


def markov_model(causal: bool, seed: int = 0):
    model, space, cfg = head_model(causal, seed, MARKOV)
    with torch.no_grad():  # a Markov term large enough to change the ranking
        model.next_item.weight.normal_(0, 1.0)
        model.next_item.weight[0] = 0.0
    return model, space, cfg


@pytest.mark.parametrize("causal", [False, True])
def test_markov_term_reads_the_last_item_each_target_may_see(causal):
    model, space, _ = markov_model(causal)
    batch = training_batch(space)
    histories = [[i for i in row if i > 0] for row in batch.short.tolist()]  # oldest first
    lens = [min(n, len(histories[r])) for r, n in zip(batch.target_req.tolist(),
                                                      batch.target_len.tolist(), strict=True)]
    assert 0 in lens and len(set(lens)) >= 3  # no item, and several prefixes
    last = model.recent_items(batch.short, batch.target_req, torch.tensor(lens))[:, 0]
    for t, (r, n) in enumerate(zip(batch.target_req.tolist(), lens, strict=True)):
        if causal:
            assert int(last[t]) == (histories[r][n - 1] if n > 0 else 0)
        else:
            assert int(last[t]) == histories[r][-1]
    model.train()
    model(batch)["loss"].backward()
    assert model.next_item.weight.grad.abs().sum() > 0  # the term trains with the item loss
    with pytest.raises(ValueError, match="recent items"):
        model.item_logits(torch.zeros(1, model.cfg.d_model))


def test_markov_term_changes_the_ranking_and_stays_within_the_beam():
    model, space, _ = markov_model(True)
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    batch = users(space, 4, seed=3)
    with_term = generate(model, batch, beam_width=8, trie=trie)
    with torch.no_grad():
        saved = model.next_item.weight.clone()
        model.next_item.weight.zero_()
    without = generate(model, batch, beam_width=8, trie=trie)
    with torch.no_grad():
        model.next_item.weight.copy_(saved)
    assert not torch.equal(with_term.items, without.items)
    for u in range(4):
        assert sorted(with_term.items[u].tolist()) == sorted(without.items[u].tolist())


def test_fast_and_reference_paths_agree_with_the_markov_term():
    model, space, _ = markov_model(True, seed=2)
    batch = users(space, 5, seed=4)
    fast = recommend(model, space, batch, beam_width=8, top_n=5)
    ref = recommend(model, space, batch, beam_width=8, top_n=5, fast=False)
    assert fast.items == ref.items and fast.legality == 1.0


@pytest.mark.slow  # an ONNX export (~1 min); the term is off by default and the head's own
def test_exported_graph_ranks_like_pytorch_with_the_markov_term(tmp_path):  # export is above
    model, space, cfg = markov_model(True, seed=2)
    assert_exported_graph_equals_pytorch(model, space, cfg, tmp_path)


@pytest.mark.parametrize("causal", [False, True])
def test_decoder_stop_gradient_leaves_the_encoder_to_the_item_head(causal):
    def encoder_grad(extra: tuple[str, ...], loss: str) -> float:
        model, space, _ = head_model(causal, extra=extra)
        model.train()
        model(training_batch(space))[loss].backward()
        decoder = sum(p.grad.abs().sum().item() for p in model.decoder.parameters()
                      if p.grad is not None)
        assert decoder > 0 or loss == "item_loss"  # the decoder still learns to generate
        return sum(p.grad.abs().sum().item() for p in model.encoder.parameters()
                   if p.grad is not None)

    stop = ("model.decoder_stop_gradient=true", "model.dropout=0")
    assert encoder_grad(stop, "ntp_loss") == 0.0  # the semantic-ID loss stops at the memory
    assert encoder_grad(stop, "item_loss") > 0  # the item head trains the user state
    assert encoder_grad(("model.dropout=0",), "ntp_loss") > 0  # off: both losses do


def test_decoder_stop_gradient_needs_the_item_head():
    with pytest.raises(ConfigError, match=r"model\.decoder_stop_gradient"):
        Config.from_preset("tiny", ["model.decoder_stop_gradient=true"])
