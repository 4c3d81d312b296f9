"""Mixture-of-Experts feed-forward for the OneRec decoder.

OneRec scales decoder capacity with sparse MoE layers: each token is routed to its top-k of E
experts, so parameters grow with E while compute grows with k. Choices here:
- Router: a linear layer -> softmax over experts -> top-k; the chosen weights are renormalised
  to sum to 1 (as in Mixtral), so k=1 degenerates to a plain switch layer.
- Balance: the Switch-Transformer auxiliary loss E * sum_e(f_e * P_e), where f_e is the share of
  routed slots that went to expert e and P_e its mean router probability. It is 1.0 at perfect
  balance and grows to E when one expert takes everything. The trainer weights it by
  `model.balance_loss_weight`.
- Dispatch: a plain loop over experts with index_select / index_add (the reference path; no
  capacity dropping, every token is served). An expert no token chose runs on zero rows, so
  plain DistributedDataParallel (no `find_unused_parameters`) sees a gradient for it on every
  rank instead of failing when one rank's batch routes nothing to it. A fused grouped-GEMM path can be added behind the
  same interface and checked against this one.
- `last_load` keeps the per-expert token share of the latest forward for logging.
- `infer` is the inference path (generation, export): the same routing without the balance loss
  or the logging. `mode="sparse"` dispatches tokens per expert (exact top-k compute; exports to
  ONNX as NonZero/Gather/ScatterND); `mode="dense"` runs every expert on every token and
  zero-weights the unchosen ones (E/k x the expert FLOPs, but no data-dependent shapes, which
  is what TensorRT wants).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MoEMode = Literal["sparse", "dense"]


class Expert(nn.Module):
    """One feed-forward expert: d_model -> hidden -> d_model with GELU."""

    def __init__(self, *, d_model: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(F.gelu(self.up(x))))


class MoEFeedForward(nn.Module):
    """Top-k routed experts. forward(x: (..., d_model)) -> ((..., d_model), balance loss ())."""

    def __init__(self, *, d_model: int, hidden: int, n_experts: int, top_k: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in [1, n_experts={n_experts}], got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(
            Expert(d_model=d_model, hidden=hidden, dropout=dropout) for _ in range(n_experts))
        self.register_buffer("last_load", torch.zeros(n_experts), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (T, d)
        probs = self.router(flat).softmax(dim=-1)  # (T, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (T, k)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (chosen == e).nonzero(as_tuple=True)
            # an expert with no token still runs (on 0 rows): its weights get a zero gradient,
            # so DDP's all-reduce sees every parameter on every rank (tests/test_ddp.py)
            y = expert(flat.index_select(0, token_idx)) * weights[token_idx, slot].unsqueeze(-1)
            out.index_add_(0, token_idx, y)
        # Switch-Transformer balance loss over the routed slots.
        load = F.one_hot(chosen, self.n_experts).float().sum(dim=(0, 1))  # (E,)
        frac = load / load.sum().clamp_min(1.0)
        balance = self.n_experts * (frac * probs.mean(dim=0)).sum()
        self.last_load = frac.detach()
        return out.reshape(shape), balance

    def infer(self, x: torch.Tensor, mode: MoEMode = "sparse") -> torch.Tensor:
        """(T, d) -> (T, d): the output only (no balance loss, `last_load` untouched)."""
        if mode not in ("sparse", "dense"):
            raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")
        probs = self.router(x).softmax(dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        gate = torch.zeros_like(probs).scatter(1, chosen, weights / weights.sum(-1, keepdim=True))
        if mode == "dense":  # (T, E) gate: k non-zeros a row
            out = gate[:, :1] * self.experts[0](x)
            for e in range(1, self.n_experts):
                out = out + gate[:, e:e + 1] * self.experts[e](x)
            return out
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            # tokens routed to e; a chosen weight that underflowed to 0 would add exactly 0 anyway
            token_idx = (gate[:, e] > 0).nonzero().squeeze(1)  # may be empty: no branch
            y = expert(x.index_select(0, token_idx)) * gate.index_select(0, token_idx)[:, e:e + 1]
            out.index_add_(0, token_idx, y)
        return out
