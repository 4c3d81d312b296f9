"""The P-Score model: the reward that tells ECPO (and RM selection) what a user would prefer.

Following OneRec (arXiv 2506.13695, section 4.1, "Preference Score"):
- One network predicts every feedback signal the logs carry (`onerec.reward.shaper.TASKS`).
  Shared parts, one head per task, so sparse tasks (follow: 0.13% of impressions) borrow
  statistics from dense ones.
- A *personalised fusion* turns the task probabilities into one preference score: weights
  w(u) = softmax(MLP(user representation)) over the six tasks, P-Score = sum_k w_k(u) p_k. The
  fusion is trained to predict "engaged" (long view, like, follow or comment) with the task
  probabilities detached, so the heads stay calibrated per task and only the weights learn
  which signal predicts engagement for this kind of user. A convex combination of
  probabilities keeps the P-Score in [0, 1] and comparable across users.
- The user side reuses OneRec's context encoding idea, smaller: the short-term and
  positive-feedback sequences (item id embedding + the sum of its semantic-ID code
  embeddings), a segment and a position embedding, a transformer encoder; the candidate attends
  to the encoded history (target attention), so one user encoding scores many candidates.

`build_reward_model` is the one constructor (seeded by `reward.seed`), so training builds the
model the same way loading rebuilds it; `loss_fn` is the objective `train` minimises.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onerec.config import Config, RewardConfig
from onerec.model import Attention, Batch, check_item_codes
from onerec.reward.shaper import ENGAGED_TASKS, TASKS


class RewardModel(nn.Module):
    """Multi-task P-Score model over (user context, candidate video).

    item_codes: (n_items + 1, L) semantic ID of each item index (row 0: padding), the same item
    space as the generator; vocab_sizes: K_l per level.
    """

    def __init__(self, cfg: RewardConfig, *, item_codes: torch.Tensor, vocab_sizes: list[int],
                 n_user_buckets: int = 1, max_seq_len: int = 50, max_pos_len: int = 50) -> None:
        super().__init__()
        check_item_codes(item_codes, vocab_sizes)
        self.cfg = cfg
        d = cfg.d_model
        self.vocab_sizes = list(vocab_sizes)
        self.n_user_buckets = max(1, n_user_buckets)
        self.max_seq_len, self.max_pos_len = max_seq_len, max_pos_len
        self.register_buffer("item_codes", item_codes.long().clone())
        offsets = torch.tensor([0, *torch.tensor(vocab_sizes).cumsum(0).tolist()[:-1]])
        self.register_buffer("code_offsets", offsets)
        self.item_emb = nn.Embedding(item_codes.shape[0], d, padding_idx=0)
        self.code_emb = nn.Embedding(int(sum(vocab_sizes)), d)
        self.user_emb = nn.Embedding(self.n_user_buckets, d)
        self.segment_emb = nn.Embedding(3, d)  # user, short, positive
        self.short_pos = nn.Embedding(max_seq_len, d)
        self.pos_pos = nn.Embedding(max_pos_len, d)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, dim_feedforward=2 * d,
                                           dropout=cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(d)
        self.target_attn = Attention(d_model=d, n_heads=cfg.n_heads, dropout=cfg.dropout)
        self.tower = nn.Sequential(nn.Linear(4 * d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                   nn.Linear(cfg.hidden, cfg.hidden), nn.GELU())
        self.heads = nn.Linear(cfg.hidden, len(TASKS))
        self.fusion = nn.Sequential(nn.Linear(d, cfg.hidden), nn.GELU(),
                                    nn.Linear(cfg.hidden, len(TASKS)))
        # not weights: the item-index -> video-id map and the codebook it belongs to
        self.item_ids: np.ndarray = np.zeros(0, dtype=np.int64)
        self.codebook_fingerprint = ""
        self._lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def item_rows(self, video_ids: np.ndarray) -> np.ndarray:
        """Video ids -> the model's item indices (1-based; 0: a video it does not know).

        Serving calls this for every request's beams, so the lookup is a sorted copy of
        `item_ids` kept until `item_ids` is replaced (loading sets it after construction):
        a request costs a binary search per candidate, not a pass over the catalogue."""
        ids = self.item_ids
        if self._lookup is None or self._lookup[0] is not ids:
            order = np.argsort(ids, kind="stable")
            self._lookup = (ids, ids[order], order)
        _, keys, order = self._lookup
        v = np.asarray(video_ids, dtype=np.int64)
        if len(keys) == 0:
            return np.zeros(v.shape, dtype=np.int64)
        pos = np.searchsorted(keys, v).clip(0, len(keys) - 1)
        return np.where(keys[pos] == v, order[pos] + 1, 0).astype(np.int64)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(..., N) item indices -> (..., N, d): item id + sum of semantic-ID code embeddings."""
        codes = self.item_codes[items] + self.code_offsets
        e = self.item_emb(items) + self.code_emb(codes).sum(-2)
        return e * (items > 0).unsqueeze(-1)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> memory (B, M, d), mask (B, M) True = real token, user representation (B, d)."""
        b = batch.short.shape[0]
        short = batch.short[:, -self.max_seq_len:]
        pos = batch.pos[:, -self.max_pos_len:]
        user = (self.user_emb(batch.user % self.n_user_buckets)
                + self.segment_emb.weight[0]).unsqueeze(1)
        s, p = short.shape[1], pos.shape[1]
        xs = self.embed_items(short) + self.short_pos.weight[-s:] + self.segment_emb.weight[1]
        xp = self.embed_items(pos) + self.pos_pos.weight[-p:] + self.segment_emb.weight[2]
        x = torch.cat([user, xs, xp], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), short > 0,
                          pos > 0], 1)
        h = self.enc_norm(self.encoder(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).float()
        urep = (h * m).sum(1) / m.sum(1)
        return h, mask, urep

    def score(self, memory: torch.Tensor, mask: torch.Tensor, urep: torch.Tensor,
              items: torch.Tensor, req: torch.Tensor) -> dict[str, torch.Tensor]:
        """Candidates (T,) of requests req (T,) -> task logits (T, 6), probabilities, fusion
        weights (T, 6) and the P-Score (T,)."""
        c = self.embed_items(items)  # (T, d)
        k, v = self.target_attn.project_kv(memory)
        interest = self.target_attn.attend(c.unsqueeze(1), k[req], v[req],
                                           mask[req][:, None, None, :]).squeeze(1)
        return self._heads(c, interest, urep, req)

    def _heads(self, c: torch.Tensor, interest: torch.Tensor, urep: torch.Tensor,
               req: torch.Tensor) -> dict[str, torch.Tensor]:
        """(T, d) candidate embeddings and their target attention, (B, d) user representations,
        (T,) each candidate's request -> the outputs of `score`."""
        u = urep[req]
        logits = self.heads(self.tower(torch.cat([u, c, interest, u * c], -1)))
        probs = torch.sigmoid(logits)
        weights = torch.softmax(self.fusion(urep), -1)[req]
        # the fusion learns weights only: its loss does not reach the task heads
        pscore = (weights * probs.detach()).sum(-1)
        return {"logits": logits, "probs": probs, "weights": weights, "pscore": pscore}

    def forward(self, batch: Batch, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score (B, C) candidate item indices for B contexts -> outputs shaped (B, C, ...).

        The C candidates of a context attend to its memory as one block of C queries: `score`
        gathers the memory's keys and values once per candidate instead, which for a serving
        batch (256 users x 32 beams over 41 memory tokens) copied 170 MB and was most of RM
        selection's time. The same outputs as `score` (tests/reward/test_model.py)."""
        memory, mask, urep = self.encode(batch)
        b, c = items.shape
        cand = self.embed_items(items)  # (B, C, d)
        k, v = self.target_attn.project_kv(memory)
        interest = self.target_attn.attend(cand, k, v, mask[:, None, None, :])  # (B, C, d)
        req = torch.arange(b, device=items.device).repeat_interleave(c)
        d = cand.shape[-1]
        out = self._heads(cand.reshape(-1, d), interest.reshape(-1, d), urep, req)
        return {k: v.reshape(b, c, *v.shape[1:]) for k, v in out.items()}

    @torch.no_grad()
    def pscore(self, batch: Batch, items: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """(B, C) item indices -> (B, C) P-Score in eval mode (index 0 scores 0)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for s in range(0, items.shape[0], chunk):
            sub = Batch(user=batch.user[s:s + chunk], short=batch.short[s:s + chunk],
                        pos=batch.pos[s:s + chunk], long=batch.long[s:s + chunk]).to(dev)
            it = items[s:s + chunk].to(dev)
            out.append(self(sub, it)["pscore"].masked_fill(it == 0, 0.0).cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(items.shape)


def loss_fn(out: dict[str, torch.Tensor], labels: torch.Tensor, fusion_weight: float,
            ) -> dict[str, torch.Tensor]:
    """Mean per-task binary cross-entropy (the watch task with its soft percentile label) plus
    the fused P-Score's cross-entropy against "engaged" (long view, like, follow or comment)."""
    per_task = F.binary_cross_entropy_with_logits(out["logits"], labels,
                                                  reduction="none").mean(0)
    engaged = labels[:, [TASKS.index(t) for t in ENGAGED_TASKS]].amax(-1)
    fused = F.binary_cross_entropy(out["pscore"].clamp(1e-6, 1 - 1e-6), engaged)
    loss = per_task.mean() + fusion_weight * fused
    return {"loss": loss, "task_losses": per_task.detach(), "fusion_loss": fused.detach()}


def build_reward_model(cfg: Config, item_codes: torch.Tensor, vocab_sizes: list[int],
                       n_user_buckets: int = 1) -> RewardModel:
    """The RewardModel `cfg.reward` describes over an item space, seeded by `reward.seed`."""
    torch.manual_seed(cfg.reward.seed)
    return RewardModel(cfg.reward, item_codes=item_codes, vocab_sizes=vocab_sizes,
                       n_user_buckets=n_user_buckets, max_seq_len=cfg.reward.max_seq_len,
                       max_pos_len=cfg.reward.max_pos_seq_len)
