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


def test_forward_scores_each_context_s_candidates_as_score_does_one_by_one(tiny):
    """`forward` lets a context's candidates attend to its memory as one block; `score` (the
    training and metrics path) gathers the memory per candidate. Same outputs, padded
    candidates and short histories included."""
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    ctx = contexts(data, 5)
    ctx.short[1, :-1] = 0  # one context with a single history item
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, codes.shape[0], (5, 7), generator=g)
    items[2, 4:] = 0  # padding, as RM selection pads short beams
    with torch.no_grad():
        out = rm(ctx, items)
        memory, mask, urep = rm.encode(ctx)
        req = torch.arange(5).repeat_interleave(7)
        one_by_one = rm.score(memory, mask, urep, items.reshape(-1), req)
    for key in ("logits", "probs", "weights", "pscore"):
        torch.testing.assert_close(out[key].reshape(35, -1),
                                   one_by_one[key].reshape(35, -1), rtol=1e-5, atol=1e-6)
    assert out["pscore"].shape == (5, 7)
