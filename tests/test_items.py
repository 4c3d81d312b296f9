"""The model's view of the catalogue (`onerec.items.ItemSpace`): item index <-> item id <->
semantic ID, built from a codebook."""

from __future__ import annotations

import numpy as np
import torch

from onerec.items import ItemSpace
from onerec.tokenizer.codebook import Codebook


def codebook() -> Codebook:
    codes = np.array([[0, 1], [1, 0], [0, 1], [2, 2]])  # items 0 and 2 share a prefix
    return Codebook.from_codes(np.zeros((2, 3, 4)), np.array([70, 10, 50, 30]), codes)


def test_index_zero_is_padding_and_row_i_is_the_semantic_id_of_index_i():
    cb = codebook()
    space = ItemSpace.from_codebook(cb)
    assert len(space) == 4 and space.codes.dtype == torch.long
    assert space.codes.shape == (5, cb.semantic_ids.shape[1])
    assert torch.equal(space.codes[0], torch.zeros_like(space.codes[0]))
    for i, item in enumerate(space.item_ids.tolist()):
        assert space.codes[i + 1].tolist() == list(cb.semantic_id(item))
    assert space.fingerprint == cb.fingerprint and space.vocab_sizes == cb.vocab_sizes


def test_index_and_to_ids_are_inverse_maps():
    space = ItemSpace.from_codebook(codebook())
    index = space.index
    assert sorted(index.values()) == [1, 2, 3, 4]
    ids = [int(v) for v in space.item_ids]
    assert space.to_ids([[index[i] for i in ids], [index[ids[2]]]]) == [ids, [ids[2]]]


def test_the_space_keeps_its_own_copy_of_the_item_ids():
    cb = codebook()
    space = ItemSpace.from_codebook(cb)
    before = space.item_ids.copy()
    cb.item_ids[0] = -1
    assert np.array_equal(space.item_ids, before)
