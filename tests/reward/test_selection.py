"""OneRec with RM selection: the reward model reranks the generator's candidates."""

from __future__ import annotations

from collections import Counter

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



def test_rm_select_code_cap_holds_each_first_level_code_to_c_picks(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    ctx = contexts(data, 1)
    beam = [int(v) for v in item_ids[:40]]
    first = {int(v): int(codes[i + 1, 0]) for i, v in enumerate(item_ids[:40])}
    free = rm_select(rm, ctx, [beam], k=10)[0]
    assert max(Counter(first[v] for v in free).values()) > 2  # the test needs a pile-up to cap
    capped = rm_select(rm, ctx, [beam], k=10, code_cap=2)[0]
    held = Counter(first[v] for v in capped[:8])
    assert len(capped) == 10 and max(held.values()) == 2  # 4 codes x 2 under the cap
    whole = rm_select(rm, ctx, [beam], k=40)[0]  # the P-Score order the cap walks
    expect, passed, n = [], [], Counter()
    for v in whole:
        (expect if n[first[v]] < 2 else passed).append(v)
        n[first[v]] += 1
    assert capped == expect + passed[:2]  # then the best passed-over fill the slate
    # too few codes to fill the slate under the cap: the passed-over fill it, best first
    one_code = [v for v in beam if first[v] == first[beam[0]]][:6]
    assert rm_select(rm, ctx, [one_code], k=5, code_cap=2)[0] == \
        rm_select(rm, ctx, [one_code], k=5)[0]
    unknown = [10**9, 10**9 + 1, 10**9 + 2]  # no code: never capped
    assert rm_select(rm, ctx, [unknown], k=3, code_cap=1)[0] == unknown
    with pytest.raises(ValueError, match="code_cap must be"):
        rm_select(rm, ctx, [beam], k=3, code_cap=0)

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
