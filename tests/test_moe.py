from __future__ import annotations

import pytest
import torch

from onerec.moe import MoEFeedForward


def make(n_experts=4, top_k=2, d=16, seed=0):
    torch.manual_seed(seed)
    return MoEFeedForward(d_model=d, hidden=32, n_experts=n_experts, top_k=top_k)


@pytest.mark.parametrize("shape", [(3, 16), (2, 5, 16), (1, 1, 1, 16)])
def test_output_keeps_the_input_shape(shape):
    moe = make()
    y, balance = moe(torch.randn(*shape))
    assert y.shape == shape and balance.shape == ()


def test_routing_equals_a_dense_weighted_sum_of_the_chosen_experts():
    moe = make(n_experts=3, top_k=2)
    x = torch.randn(7, 16)
    y, _ = moe(x)
    probs = moe.router(x).softmax(-1)
    w, idx = probs.topk(2, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    dense = torch.stack([e(x) for e in moe.experts], dim=1)  # (T, E, d)
    ref = (dense.gather(1, idx.unsqueeze(-1).expand(-1, -1, 16)) * w.unsqueeze(-1)).sum(1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_top_k_equal_to_n_experts_uses_every_expert():
    moe = make(n_experts=2, top_k=2)
    moe(torch.randn(50, 16))
    torch.testing.assert_close(moe.last_load, torch.tensor([0.5, 0.5]))


def test_balance_loss_is_one_when_balanced_and_grows_when_collapsed():
    moe = make(n_experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router: probabilities 1/4
    _, balance = moe(torch.randn(64, 16))
    # ties send everything to expert 0 while P is uniform: f=(1,0,0,0), P=1/4 -> loss 1
    assert balance.item() == pytest.approx(1.0)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0].fill_(10.0)
    x = torch.rand(64, 16) + 0.1  # positive inputs: expert 0 wins with probability ~1
    _, collapsed = moe(x)
    assert collapsed.item() > 3.5  # approaches E = 4
    assert moe.last_load[0].item() == pytest.approx(1.0)


def test_balance_loss_gradient_pushes_the_router_toward_balance():
    moe = make(n_experts=4, top_k=1)
    x = torch.randn(256, 16)
    with torch.no_grad():
        moe.router.weight[0] = 3 * x[:128].mean(0)  # expert 0 favoured by half the tokens
    opt = torch.optim.SGD(moe.router.parameters(), lr=0.5)
    _, before = moe(x)
    load_before = moe.last_load.max().item()
    for _ in range(60):
        opt.zero_grad()
        _, balance = moe(x)
        balance.backward()
        opt.step()
    _, after = moe(x)
    assert after.item() < before.item()
    assert moe.last_load.max().item() < load_before
    assert moe.last_load.max().item() <= 0.3  # close to the balanced 0.25


def test_invalid_top_k_is_rejected():
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(d_model=8, hidden=8, n_experts=2, top_k=3)
