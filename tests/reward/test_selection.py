"""OneRec with RM selection: the reward model reranks the generator's candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.reward import rm_select
from tests.reward.util import contexts, make_rm


def test_rm_select_returns_the_top_k_by_pscore(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    ctx = contexts(data, 2)
    cands = [[int(v) for v in item_ids[:8]] + [int(item_ids[0])], [int(item_ids[3]), 10**9]]
    out = rm_select(rm, ctx, cands, k=3)
    scores = rm.pscore(ctx, torch.arange(1, 9).unsqueeze(0).expand(2, -1))[0]
    expect = [int(item_ids[j]) for j in scores.argsort(descending=True)[:3].tolist()]
    assert out[0] == expect
    assert out[1] == [int(item_ids[3]), 10**9]  # unknown video last, duplicates once
    with pytest.raises(ValueError, match="k must be"):
        rm_select(rm, ctx, cands, k=0)


def test_rm_select_top_m_lets_only_the_beams_first_m_compete(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    ctx = contexts(data, 1)
    beam = [int(v) for v in item_ids[:8]]
    whole = rm_select(rm, ctx, [beam], k=8)[0]
    head = rm_select(rm, ctx, [beam + beam[:2]], k=3, top_m=4)[0]  # duplicates don't count
    assert set(head) <= set(beam[:4]) and len(head) == 3
    assert head == [v for v in whole if v in beam[:4]][:3]  # the same order among the first M
    assert rm_select(rm, ctx, [beam], k=8, top_m=100)[0] == whole
    with pytest.raises(ValueError, match="top_m must be"):
        rm_select(rm, ctx, [beam], k=3, top_m=0)


def test_item_rows_maps_video_ids_to_the_models_indices_and_follows_a_new_table(tiny):
    cfg, _ds, item_ids, codes, _shaper, _data = tiny
    rm = make_rm(cfg, codes, item_ids)
    index = {int(v): i + 1 for i, v in enumerate(item_ids)}
    asked = np.array([int(item_ids[5]), 10**9, int(item_ids[0]), -1, int(item_ids[-1])])
    assert rm.item_rows(asked).tolist() == [index.get(int(v), 0) for v in asked]
    rm.item_ids = np.asarray(item_ids[::-1], dtype=np.int64)  # what loading does: a new table
    assert rm.item_rows(asked[:1]).tolist() == [len(item_ids) - 5]
    rm.item_ids = np.zeros(0, dtype=np.int64)
    assert rm.item_rows(asked).tolist() == [0] * len(asked)
