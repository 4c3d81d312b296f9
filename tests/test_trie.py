"""The catalogue's trie, the one valid-prefix structure, against the item codes it was built from."""

from __future__ import annotations

import itertools

import pytest
import torch

from onerec.trie import ItemTrie
from tests.test_generate import unique_codes


def continuations(codes: torch.Tensor, prefix: tuple[int, ...], k: int) -> list[bool]:
    """From first principles: which codes some real item (rows 1..) continues `prefix` with."""
    rows = [tuple(r) for r in codes[1:].tolist()]
    nxt = {r[len(prefix)] for r in rows if r[: len(prefix)] == prefix}
    return [c in nxt for c in range(k)]


def test_allowed_is_exactly_the_codes_real_items_continue_with():
    vocab = [4, 3, 5]
    codes = unique_codes(tuple(vocab), 17, seed=11)
    trie = ItemTrie.from_codes(codes, vocab)
    for lv in range(3):
        for prefix in itertools.product(*(range(k) for k in vocab[:lv])):
            got = trie.allowed(torch.tensor(prefix, dtype=torch.long)).tolist()
            assert got == continuations(codes, prefix, vocab[lv]), prefix
    # batched prefixes give the rows of the one-at-a-time answers
    batch = codes[1:6, :2]
    assert torch.equal(trie.allowed(batch),
                       torch.stack([trie.allowed(p) for p in batch]))


def test_a_small_catalogue_by_hand():
    codes = torch.tensor([[0, 0, 0], [1, 2, 0], [1, 2, 1], [3, 0, 1]])  # row 0 is padding
    trie = ItemTrie.from_codes(codes, [4, 3, 2])
    assert trie.allowed(torch.zeros(0, dtype=torch.long)).tolist() == [False, True, False, True]
    assert trie.allowed(torch.tensor([1])).tolist() == [False, False, True]
    assert trie.allowed(torch.tensor([1, 2])).tolist() == [True, True]
    assert trie.allowed(torch.tensor([2])).tolist() == [False, False, False]  # no item: dead
    assert trie.allowed(torch.tensor([2, 1])).tolist() == [False, False]  # stays dead
    assert trie.items((3, 0, 1)) == [3] and trie.items((1, 2, 0)) == [1]
    assert trie.items((3, 0, 0)) == [] and trie.items((9, 0, 0)) == [] and trie.items((1,)) == []
    with pytest.raises(ValueError, match="no next code"):
        trie.allowed(torch.tensor([1, 2, 0]))


def test_nodes_and_leaves_name_every_item_once():
    vocab = (4, 3, 5)
    codes = unique_codes(vocab, 17, seed=11)
    trie = ItemTrie.from_codes(codes, list(vocab))
    frontier = {(): 0}  # every prefix of a real item -> its node
    for lv in range(3):
        nxt = {}
        for prefix, node in frontier.items():
            cand, first = trie.candidates(lv, torch.tensor(node))
            real = [c for c in cand.tolist() if c < vocab[lv]]
            assert real == sorted(real)  # a node's children: one run of node ids, by code
            allowed = trie.allowed(torch.tensor(prefix, dtype=torch.long))
            assert allowed.nonzero().view(-1).tolist() == real
            assert int(trie.node(torch.tensor(prefix, dtype=torch.long))) == node
            nxt.update({(*prefix, c): int(first) + i for i, c in enumerate(real)})
        frontier = nxt
    assert sorted(int(trie.leaf_item[n]) for n in frontier.values()) == list(range(1, 18))
    assert torch.equal(trie.walk(codes[1:]), torch.arange(1, 18))
    missing = [c for c in itertools.product(*(range(k) for k in vocab))
               if list(c) not in codes[1:].tolist()][:5]
    assert trie.walk(torch.tensor(missing)).tolist() == [0] * len(missing)
    # out of range, the sentinel code K included, is no item either
    assert trie.walk(torch.tensor([[4, 0, 0], [0, 3, 0], [-1, 0, 0]])).tolist() == [0, 0, 0]
    dead = [trie.dead(lv) for lv in range(3)]
    assert dead == [len(trie.offsets[1]) - 2, len(trie.offsets[2]) - 2, len(trie.leaf_item) - 1]
    assert trie.fanout == [max(1, int(torch.diff(o[:-1]).max())) for o in trie.offsets]


def test_the_tables_grow_with_the_items_not_with_items_times_codes():
    # 20k items with 3 codes of K = 1024 (random, so the deep levels are nearly one item a
    # node) and a disambiguation level: a dense (node, code) table would take 4 x 1024 bytes
    # an item at the third level alone
    rng = torch.Generator().manual_seed(0)
    n, vocab = 20_000, [1024, 1024, 1024, 2]
    base = torch.randint(0, 1024, (n, 3), generator=rng)
    base = torch.unique(base, dim=0)
    codes = torch.cat([torch.zeros(1, 4, dtype=torch.long),
                       torch.cat([base, torch.zeros(len(base), 1, dtype=torch.long)], 1)])
    trie = ItemTrie.from_codes(codes, vocab)
    assert trie.nbytes / len(base) <= 40
    assert torch.equal(trie.walk(codes[1:]), torch.arange(1, len(base) + 1))


def test_trie_refuses_duplicate_semantic_ids_and_codes_out_of_range():
    codes = torch.tensor([[0, 0], [1, 2], [1, 2]])
    with pytest.raises(ValueError, match="share a semantic ID"):
        ItemTrie.from_codes(codes, [3, 3])
    with pytest.raises(ValueError, match=r"level 1: codes must be in \[0, 2\)"):
        ItemTrie.from_codes(torch.tensor([[0, 0], [1, 2]]), [3, 2])
    with pytest.raises(ValueError, match="L=2"):
        ItemTrie.from_codes(torch.zeros(3, 3, dtype=torch.long), [3, 2])
