"""The multi-task reward network and its personalised fusion into one P-Score."""

from __future__ import annotations

import torch

from tests.reward.util import contexts, make_rm


def test_pscore_is_a_personalised_convex_fusion(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    ctx = contexts(data, 4)
    out = rm(ctx, torch.tensor([[1, 2, 3]] * 4))
    w = out["weights"]
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 3))
    assert (w > 0).all()
    torch.testing.assert_close(out["pscore"], (w * out["probs"]).sum(-1))
    assert ((out["pscore"] >= 0) & (out["pscore"] <= 1)).all()
