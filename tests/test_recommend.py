"""Batched recommendation: the fast generator and the reference beam search give the same lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.config import Config
from onerec.items import ItemSpace
from onerec.model import Batch, OneRec
from onerec.recommend import recommend


def test_recommend_fast_and_reference_paths_agree():
    torch.manual_seed(3)
    vocab = [4, 3, 2]
    n = 18
    cfg = Config.from_preset("tiny").model
    codes = torch.stack([torch.randint(0, k, (n,)) for k in vocab], 1)
    codes = torch.unique(codes, dim=0)  # unique semantic IDs, like a real codebook
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), codes])
    model = OneRec(cfg, item_codes=codes, vocab_sizes=vocab, max_seq_len=6, max_pos_len=1).eval()
    space = ItemSpace(item_ids=np.arange(500, 500 + len(codes) - 1), codes=codes,
                      vocab_sizes=vocab, fingerprint="x")
    ctx = Batch(user=torch.zeros(5, dtype=torch.long), short=torch.randint(0, len(codes), (5, 6)),
                pos=torch.zeros(5, 1, dtype=torch.long), long=torch.zeros(5, 1, dtype=torch.long))
    for constrained in (True, False):
        fast = recommend(model, space, ctx, beam_width=8, top_n=5, constrained=constrained)
        ref = recommend(model, space, ctx, beam_width=8, top_n=5, constrained=constrained,
                        fast=False)
        assert fast.items == ref.items
        assert fast.legality == pytest.approx(ref.legality)
        assert all(v >= 500 for row in fast.items for v in row)
