"""SASRec (Kang & McAuley, ICDM 2018), our own plain-PyTorch implementation, as a baseline.

Design choices:
- The architecture is the paper's: item embeddings (scaled by sqrt(d)) plus learned absolute
  positions, a stack of causal self-attention blocks (pre-LN or post-LN, GELU or ReLU
  feed-forward, dropout), and scores given by the dot product of the last hidden state with the
  (shared) item embedding table.
- The loss is not the paper's. The original trains with binary cross-entropy against one
  sampled negative per position; we use the full softmax cross-entropy over every item at every
  non-padding position. That is known to beat the original by a wide margin on the same
  architecture (Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better
  than SASRec?", RecSys 2023; Petrov & Macdonald, gSASRec, RecSys 2023), and it makes this a
  strong baseline rather than a weak one. Memory stays small because logits are computed only
  at the positions that have a target: (targets in the batch) x (items), not
  batch x positions x items.
- Sequences are left-padded (right-aligned), so the last position always holds the most recent
  item and its position embedding means "most recent". Sequences longer than `max_len` + 1 are
  cut, from the end, into windows of `max_len` inputs so every training target is used once.
- Evaluation is full ranking: score all items, take the top k. History items are *not* removed,
  following the TIGER protocol (Table 1) the baseline is compared under.
- Padding never gets attention weight from a real position. Each position may always attend to
  itself, so a padded query has one key and never produces NaN; padded outputs are zeroed.
- Deterministic on CPU under `cfg.seed`: the global torch RNG is forked and seeded, data order
  comes from a seeded numpy generator, and there is nothing asynchronous.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onerec.config import SASRecConfig
from onerec.evaluate import rank_metrics


class Block(nn.Module):
    """One causal self-attention block: attention + position-wise feed-forward."""

    def __init__(self, *, d_model: int, n_heads: int, ffn_hidden: int, dropout: float,
                 norm: str, activation: str) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.pre_ln = norm == "pre"
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln1 = nn.LayerNorm(d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ffn_hidden)
        self.ff2 = nn.Linear(ffn_hidden, d_model)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def _attn(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, d); allowed: (B, 1, L, L) bool, True where a query may attend a key."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(self.drop(self.act(self.ff1(x))))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.drop(self._attn(self.ln1(x), allowed))
            return x + self.drop(self._ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self._attn(x, allowed)))
        return self.ln2(x + self.drop(self._ffn(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender over items 1..n_items (0 is padding)."""

    def __init__(self, *, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d_model=cfg.d_model, n_heads=cfg.n_heads, ffn_hidden=cfg.ffn_hidden,
                  dropout=cfg.dropout, norm=cfg.norm, activation=cfg.activation)
            for _ in range(cfg.n_layers))
        # pre-LN stacks end with a LayerNorm; post-LN blocks already end normalised
        self.final_ln = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.history: list[dict[str, Any]] = []  # one entry per epoch, filled by train_sasrec
        self.best_epoch = 0  # epoch whose weights are kept (0: none trained)
        nn.init.normal_(self.item_emb.weight, std=cfg.d_model ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs: (B, L) item ids, left-padded with 0, L <= max_len -> hidden states (B, L, d)."""
        n = seqs.shape[1]
        keep = seqs > 0  # (B, L)
        pos = torch.arange(self.cfg.max_len - n, self.cfg.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        x = self.emb_drop(x) * keep.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=seqs.device)
        allowed = (causal & (keep[:, None, :] | eye)).unsqueeze(1)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed) * keep.unsqueeze(-1)
        return self.final_ln(x)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, d) -> scores over ids 0..n_items, (N, n_items + 1); padding is -inf."""
        logits = hidden @ self.item_emb.weight.T
        logits[:, 0] = float("-inf")
        return logits


# -- data ----------------------------------------------------------------------------------------
def _pad_left(seqs: Sequence[Sequence[int]], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s)[-length:]
        if s:
            out[i, length - len(s):] = s
    return out


def training_windows(train_seqs: dict[int, list[int]], max_len: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets, (N, max_len) each, left-padded; target 0 means no loss.

    A sequence of n items gives n - 1 (input, target) pairs; long ones are cut from the end
    into windows of max_len pairs, so every pair is used once per epoch.
    """
    inputs, targets = [], []
    for user in sorted(train_seqs):
        seq = [int(i) for i in train_seqs[user]]
        inp, tgt = seq[:-1], seq[1:]
        for end in range(len(inp), 0, -max_len):
            start = max(0, end - max_len)
            inputs.append(inp[start:end])
            targets.append(tgt[start:end])
    return _pad_left(inputs, max_len), _pad_left(targets, max_len)


# -- training ------------------------------------------------------------------------------------
def train_sasrec(train_seqs: dict[int, list[int]], n_items: int, cfg: SASRecConfig, *,
                 valid: Sequence[tuple[int, list[int], int]] | None = None,
                 log: Callable[[dict[str, Any]], None] | None = None,
                 max_minutes: float | None = None) -> SASRec:
    """Train SASRec with full-softmax cross-entropy at every position of the training sequences.

    valid: (user, history, target) rows; when given, NDCG@10 on them is checked every
    `cfg.eval_every` epochs, training stops after `cfg.patience` checks without improvement,
    and the best weights are restored. max_minutes: a wall-clock budget (checked every step).
    log: called with one dict per epoch (epoch, loss, seconds, and valid_ndcg@10 if checked).
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be > 0, got {n_items}")
    bad = [i for s in train_seqs.values() for i in s if not 1 <= int(i) <= n_items]
    if bad:
        raise ValueError(f"item id {bad[0]} outside 1..{n_items}")
    inputs, targets = training_windows(train_seqs, cfg.max_len)
    if not (targets > 0).any():
        raise ValueError("no training pairs: every sequence has fewer than 2 items")
    start = time.perf_counter()
    deadline = start + 60.0 * max_minutes if max_minutes is not None else math.inf
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        model = SASRec(n_items=n_items, cfg=cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad_checks = -1.0, None, 0
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = rng.permutation(len(inputs))
            total, count = 0.0, 0
            for lo in range(0, len(order), cfg.batch_size):
                idx = order[lo:lo + cfg.batch_size]
                x = torch.from_numpy(inputs[idx])
                y = torch.from_numpy(targets[idx])
                mask = y > 0
                hidden = model(x)[mask]  # (N, d): only positions with a target
                loss = F.cross_entropy(model.scores(hidden), y[mask])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = int(mask.sum())
                total += loss.item() * n
                count += n
                if time.perf_counter() > deadline:
                    break
            entry: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1),
                                     "seconds": time.perf_counter() - start}
            timed_out = time.perf_counter() > deadline
            if valid is not None and (epoch % cfg.eval_every == 0 or timed_out
                                      or epoch == cfg.max_epochs):
                ndcg = evaluate_rows(model, valid, ks=(10,))["ndcg@10"]
                entry["valid_ndcg@10"] = ndcg
                if ndcg > best:
                    best, bad_checks = ndcg, 0
                    best_state = copy.deepcopy(model.state_dict())
                    model.best_epoch = epoch
                else:
                    bad_checks += 1
            else:
                model.best_epoch = epoch
            model.history.append(entry)
            if log is not None:
                log(entry)
            if timed_out or bad_checks >= cfg.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return model


# -- inference -----------------------------------------------------------------------------------
@torch.no_grad()
def recommend(model: SASRec, histories: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Top-k item ids (distinct, in 1..n_items, best first) for each history, full ranking.

    Histories longer than the model's max_len keep their most recent items; an empty history
    is allowed (the model then ranks from position information alone).
    """
    if not 0 < k <= model.n_items:
        raise ValueError(f"k must be in 1..{model.n_items}, got {k}")
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    bs = model.cfg.eval_batch_size
    for lo in range(0, len(histories), bs):
        x = torch.from_numpy(_pad_left(histories[lo:lo + bs], model.cfg.max_len))
        last = model(x)[:, -1]  # (B, d): the most recent position
        top = model.scores(last).topk(k, dim=1).indices
        out.extend(top.tolist())
    model.train(was_training)
    return out


def evaluate_rows(model: SASRec, rows: Sequence[tuple[int, list[int], int]],
                  ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Recall/NDCG of `model` on (user, history, target) rows, full ranking."""
    recs = recommend(model, [h for _, h, _ in rows], max(ks))
    return rank_metrics(recs, [t for _, _, t in rows], ks)
