"""The reference beam search: equal to exhaustive search, legal under the trie, the same with
shared or copied memory, and the disambiguation token renormalised over its legal codes."""

from __future__ import annotations

import itertools

import torch

from onerec.beam_search import beam_search, codes_to_items, disambiguation_logp
from onerec.trie import ItemTrie
from tests.test_model import random_batch, tiny_model


def exhaustive_top(model, batch, n):
    memory, mask = model.encode(batch)
    all_codes = torch.tensor(list(itertools.product(*(range(k) for k in model.vocab_sizes))))
    results = []
    for u in range(memory.shape[0]):
        mem = memory[u:u + 1].expand(len(all_codes), -1, -1)
        mm = mask[u:u + 1].expand(len(all_codes), -1)
        hidden, _ = model.decode(all_codes[:, :-1], mem, mm)
        lp = sum(model.level_logits(hidden[:, lv], lv).log_softmax(-1)
                 .gather(1, all_codes[:, lv:lv + 1]).squeeze(1) for lv in range(model.levels))
        best = lp.topk(n).indices
        results.append((all_codes[best], lp[best]))
    return results


@torch.no_grad()
def test_beam_search_with_a_full_beam_equals_exhaustive_search():
    model = tiny_model(vocab=(4, 3, 2)).eval()
    batch = random_batch(model, b=3)
    codes, scores = beam_search(model, batch, beam_width=24, top_n=5)
    for u, (ex_codes, ex_scores) in enumerate(exhaustive_top(model, batch, 5)):
        torch.testing.assert_close(scores[u], ex_scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(codes[u], ex_codes)


@torch.no_grad()
def test_constrained_decoding_never_emits_an_illegal_id():
    model = tiny_model(vocab=(5, 5, 5), n_items=12).eval()
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    legal = {tuple(r) for r in model.item_codes[1:].tolist()}
    batch = random_batch(model, b=4)
    codes, scores = beam_search(model, batch, beam_width=16, top_n=16, trie=trie)
    finite = torch.isfinite(scores)
    assert finite.sum() > 0
    for sid, ok in zip(codes.view(-1, 3).tolist(), finite.view(-1).tolist(), strict=True):
        if ok:
            assert tuple(sid) in legal
    items, legality = codes_to_items(codes, scores, trie, top_n=10)
    assert legality == [1.0] * 4
    assert all(1 <= i < model.item_codes.shape[0] for row in items for i in row)
    # unconstrained: a random model generates some IDs no item has (legality < 1)
    codes, scores = beam_search(model, batch, beam_width=16, top_n=16)
    _, free_legality = codes_to_items(codes, scores, trie, top_n=10)
    assert min(free_legality) < 1.0


def test_disambiguation_level_is_renormalised_over_legal_codes():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.1, 9.0], [1.0, 1.0, 1.0]])
    legal = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    logp = disambiguation_logp(logits, legal)
    assert torch.allclose(logp[0, :2].exp().sum(), torch.tensor(1.0))  # a distribution
    assert logp[0, 2] == float("-inf")
    assert logp[1].tolist() == [float("-inf"), 0.0, float("-inf")]  # one legal code: log 1
    assert (logp[2] == float("-inf")).all()  # a dead beam stays dead, no NaN


def test_textbook_beam_search_with_copied_memory_returns_the_same_beams():
    model = tiny_model().eval()
    batch = random_batch(model, b=3)
    trie = ItemTrie.from_codes(model.item_codes, model.vocab_sizes)
    shared = beam_search(model, batch, beam_width=6, top_n=6, trie=trie)
    copied = beam_search(model, batch, beam_width=6, top_n=6, trie=trie,
                         share_memory=False)
    assert torch.equal(shared[0], copied[0])
    torch.testing.assert_close(shared[1], copied[1], rtol=1e-5, atol=1e-5)
