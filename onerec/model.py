"""The OneRec generator: a multi-scale user encoder and a MoE decoder over semantic IDs.

Following OneRec (arXiv 2506.13695, section 3):
- Encoder (multi-scale user modelling). The context is a sequence of tokens from four
  pathways, each with its own segment embedding: static user features (one token), the
  short-term sequence (most recent videos, with positions), the positive-feedback sequence
  (long views and likes), and the lifelong sequence compressed to `n_long_tokens` tokens by
  learned-query attention pooling (a QFormer-style pooler: fixed cost however long the history).
  A history video is embedded as its item-id embedding plus the sum of its semantic-ID code
  embeddings, so rare videos share statistics with their semantic neighbours.
- Decoder. Input BOS + the first L-1 codes of the target's semantic ID; causal self-attention,
  cross-attention to the encoder output, and a Mixture-of-Experts feed-forward (`onerec.moe`).
  Level l has its own output head over its K_l codes (levels have separate vocabularies).
- `arch: lazy_decoder` (OneRec-V2) skips the encoder stack: the context embeddings are used
  directly as cross-attention keys/values, so almost all compute goes to the decoder.

Compute compression (OneRec's "one encoder pass serves all targets of a request"): `forward`
takes `target_req`, the request index of each target, and gathers the encoder output for each
target instead of re-encoding the request per target. With `causal_encoder` the short
sequence is stored oldest first and attends causally, so one pass over a user's sequence
serves every prefix of it: target t sees the encoder outputs of the first `target_len[t]`
items (the sequence-data analogue: ~7x fewer encoder passes on Amazon Beauty).

Attention is written out (not nn.MultiheadAttention) so the fast generator can cache decoder
keys/values and share cross-attention keys/values across beams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from onerec.config import ModelConfig
from onerec.moe import MoEFeedForward, MoEMode

if TYPE_CHECKING:
    from onerec.transitions import TransitionTable


@dataclass
class Batch:
    """A training or inference batch of B requests and T targets (T >= B with compression).

    user: (B,) user feature bucket; short, pos: (B, S) / (B, P) item indices (0 = padding),
    most recent last; long: (B, G) item indices; target_codes: (T, L) semantic IDs;
    target_req: (T,) index in [0, B) of each target's request; target_len: (T,) with a causal
    encoder, how many of the request's short items (oldest first) the target may see (None: all);
    target_items: (T,) item index of each target (the auxiliary next-item loss needs it).
    """

    user: torch.Tensor
    short: torch.Tensor
    pos: torch.Tensor
    long: torch.Tensor
    target_codes: torch.Tensor | None = None
    target_req: torch.Tensor | None = None
    target_len: torch.Tensor | None = None
    target_items: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in (
            self.user, self.short, self.pos, self.long, self.target_codes, self.target_req,
            self.target_len, self.target_items)))


def left_align(seq: torch.Tensor) -> torch.Tensor:
    """(B, S) left-padded rows (most recent last) -> the same items oldest first, padding after."""
    s = seq.shape[1]
    n = (seq > 0).sum(1, keepdim=True)
    slot = torch.arange(s, device=seq.device).unsqueeze(0)
    src = (slot + s - n).clamp_max(s - 1)
    return seq.gather(1, src) * (slot < n)


def causal_short_mask(m: int, s: int, device: torch.device) -> torch.Tensor:
    """(M, M) encoder mask, True = attend: short slot j (memory index 1 + j) sees short slots
    <= j; every query sees the non-short tokens (user, positive, lifelong); non-short tokens do
    not see the short sequence, so no token carries information from a later item."""
    idx = torch.arange(m, device=device)
    is_short = (idx >= 1) & (idx < 1 + s)
    short_ok = is_short.unsqueeze(1) & (idx.unsqueeze(0) <= idx.unsqueeze(1))
    return torch.where(is_short.unsqueeze(0), short_ok, torch.ones_like(short_ok))


def visible_prefix(m: int, s: int, target_len: torch.Tensor) -> torch.Tensor:
    """(T, M) memory mask for targets that may see the first `target_len` short items."""
    idx = torch.arange(m, device=target_len.device).unsqueeze(0)
    short_slot = idx - 1
    is_short = (idx >= 1) & (idx < 1 + s)
    return ~is_short | (short_slot < target_len.unsqueeze(1))


class Attention(nn.Module):
    """Multi-head attention with separate q and kv inputs (self- or cross-attention)."""

    def __init__(self, *, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, h, N, d/h)
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(kv).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        q = self.split(self.q(q_in))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        b, h, n, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, h * dh))

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        k, v = self.project_kv(kv_in)
        return self.attend(q_in, k, v, mask, causal)

    # Generation (`onerec.generate`): one new token per sequence, a KV cache, shared memory.

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The q and kv projections as one (d -> 3d) weight and bias, for `step`: made once by
        the caller (a copy; the module's own weights are untouched)."""
        return (torch.cat([self.q.weight, self.kv.weight]).detach(),
                torch.cat([self.q.bias, self.kv.bias]).detach())

    def step(self, x: torch.Tensor, qkv: tuple[torch.Tensor, torch.Tensor],
             cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal self-attention of the newest token x: (N, d) over the earlier ones.

        cache: their keys and values as one (N, t, 2d) tensor (None at the first token);
        qkv: `fused_qkv()`. Returns the output (N, d) and the cache grown to t + 1. Attention
        over t <= L cached tokens is a few element-wise ops (no kernel launch per sequence).
        """
        n, d = x.shape
        heads = self.n_heads
        dh = d // heads
        proj = F.linear(x, *qkv)  # (N, 3d)
        kv = proj[:, None, d:]
        cache = kv if cache is None else torch.cat([cache, kv], dim=1)  # (N, t, 2d)
        t = cache.shape[1]
        q = proj[:, :d].reshape(n, 1, heads, dh) * dh ** -0.5
        kv = cache.view(n, t, 2, heads, dh)  # strided views of k and v, no copies
        att = (q * kv[:, :, 0]).sum(-1).softmax(dim=1)  # (N, t, h)
        y = (att.unsqueeze(-1) * kv[:, :, 1]).sum(1)
        return self.out(y.reshape(n, d)), cache

    def shared_memory(self, memory: torch.Tensor, mem_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Once per user: cross-attention keys (B, h, d/h, M), pre-transposed and pre-scaled,
        values (B, h, M, d/h), and the padding mask as an additive bias (B, 1, 1, M)."""
        k, v = self.project_kv(memory)
        scale = k.shape[-1] ** -0.5
        bias = torch.zeros(mem_mask.shape, dtype=k.dtype, device=k.device)
        bias = bias.masked_fill(~mem_mask, float("-inf"))[:, None, None, :]
        return (k * scale).transpose(-1, -2), v, bias

    def attend_shared(self, x: torch.Tensor, shared: tuple[torch.Tensor, ...], group: int
                      ) -> torch.Tensor:
        """x: (N, d), N = B * group queries; the `group` queries of user b attend to its
        `shared_memory(...)` row b as one block (never copied per query)."""
        n, d = x.shape
        heads = self.n_heads
        keys_t, values, bias = shared
        q = self.q(x).reshape(n // group, group, heads, d // heads).transpose(1, 2)
        att = (torch.matmul(q, keys_t) + bias).softmax(dim=-1)  # (B, h, group, M)
        return self.out(torch.matmul(att, values).transpose(1, 2).reshape(n, d))


class FeedForward(nn.Module):
    def __init__(self, *, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        rate = cfg.encoder_rate
        self.attn = Attention(d_model=cfg.d_model, n_heads=cfg.n_heads, dropout=rate)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(d_model=cfg.d_model, hidden=cfg.expert_hidden, dropout=rate)
        self.drop = nn.Dropout(rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, mask))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = Attention(d_model=d, n_heads=cfg.n_heads, dropout=cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = Attention(d_model=d, n_heads=cfg.n_heads, dropout=cfg.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.moe = MoEFeedForward(d_model=d, hidden=cfg.expert_hidden, n_experts=cfg.n_experts,
                                  top_k=cfg.top_k_experts, dropout=cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mem_kv: tuple[torch.Tensor, torch.Tensor],
                mem_mask: torch.Tensor, group: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, l, d) with N = B * group sequences; mem_kv: (B, h, M, d/h) each.

        The `group` sequences of one memory row (the beams of one user) attend to it as extra
        query positions, so its keys and values are shared, never copied per beam.
        """
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, causal=True))
        n, length, d = x.shape
        q = self.norm2(x).reshape(n // group, group * length, d)
        y = self.cross_attn.attend(q, *mem_kv, mem_mask).reshape(n, length, d)
        x = x + self.drop(y)
        y, balance = self.moe(self.norm3(x))
        return x + self.drop(y), balance

    def cross_memory(self, memory: torch.Tensor, mem_mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Once per user: this layer's cross-attention K/V and mask bias, for `step`."""
        return self.cross_attn.shared_memory(memory, mem_mask)

    def step(self, x: torch.Tensor, cache: torch.Tensor | None, cross: tuple[torch.Tensor, ...],
             group: int, qkv: tuple[torch.Tensor, torch.Tensor], moe: MoEMode = "sparse"
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference on the newest token of every sequence: `forward` with a KV cache.

        x: (N, d), N = B * group; cache: `Attention.step`'s (None at the first token); cross:
        `cross_memory(...)` of the B users, shared by their `group` sequences; qkv:
        `self_attn.fused_qkv()`; moe: `MoEFeedForward.infer`'s mode. Returns the output and
        the grown cache.
        """
        y, cache = self.self_attn.step(self.norm1(x), qkv, cache)
        x = x + y
        x = x + self.cross_attn.attend_shared(self.norm2(x), cross, group)
        return x + self.moe.infer(self.norm3(x), moe), cache


def check_item_codes(item_codes: torch.Tensor, vocab_sizes: list[int]) -> None:
    """ValueError unless item_codes is (n_items + 1, L) for the L levels of `vocab_sizes` (the
    item table every model over the semantic IDs holds: the generator and the P-Score model)."""
    if item_codes.dim() != 2 or item_codes.shape[1] != len(vocab_sizes):
        raise ValueError(f"item_codes must be (n_items + 1, L={len(vocab_sizes)}), "
                         f"got {tuple(item_codes.shape)}")


class OneRec(nn.Module):
    """Encoder-decoder generator of semantic IDs.

    item_codes: (n_items + 1, L) semantic ID of each item index (row 0: padding);
    vocab_sizes: K_l per level; n_user_buckets: size of the user-feature vocabulary.
    """

    def __init__(self, cfg: ModelConfig, *, item_codes: torch.Tensor, vocab_sizes: list[int],
                 n_user_buckets: int = 1, max_seq_len: int = 50, max_pos_len: int = 50) -> None:
        super().__init__()
        check_item_codes(item_codes, vocab_sizes)
        self.cfg = cfg
        d = cfg.d_model
        self.levels = len(vocab_sizes)
        self.vocab_sizes = list(vocab_sizes)
        # int32: half the bytes of int64 in memory and in the exported graph (160 MB at 10 M
        # items and 4 tokens), and a type every runtime's Gather takes (TensorRT has no int16)
        self.register_buffer("item_codes", item_codes.to(torch.int32).clone())
        offsets = torch.tensor([0, *torch.tensor(vocab_sizes).cumsum(0).tolist()[:-1]])
        self.register_buffer("code_offsets", offsets)
        n_codes = int(sum(vocab_sizes))
        # context embeddings
        self.item_emb = (nn.Embedding(item_codes.shape[0], d, padding_idx=0)
                         if cfg.item_id_embedding else None)
        self.code_emb = nn.Embedding(n_codes, d)  # shared by context and decoder tokens
        self.user_emb = nn.Embedding(max(1, n_user_buckets), d)
        self.segment_emb = nn.Embedding(4, d)  # user, short, positive, lifelong
        self.short_pos = nn.Embedding(max_seq_len, d)
        self.pos_pos = nn.Embedding(max_pos_len, d)
        self.long_queries = nn.Parameter(torch.randn(cfg.n_long_tokens, d) * 0.02)
        self.long_pool = Attention(d_model=d, n_heads=cfg.n_heads, dropout=cfg.encoder_rate)
        self.input_drop = nn.Dropout(cfg.encoder_rate)  # on the encoder's input embeddings
        self.encoder = nn.ModuleList(
            EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers if cfg.arch == "encoder_decoder"
                                             else 0))
        self.enc_norm = nn.LayerNorm(d)
        # decoder
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.level_emb = nn.Embedding(self.levels, d)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, k) for k in vocab_sizes)
        # auxiliary next-item loss: the user state -> a query against the tied item embeddings
        self.item_query = nn.Linear(d, d) if cfg.item_loss_weight > 0 else None
        # the head's Markov term: row i is added to the query of a state whose last item is i
        self.next_item = (nn.Embedding(item_codes.shape[0], d, padding_idx=0)
                          if cfg.item_loss_weight > 0 and cfg.markov_head else None)
        # the head's learned transition feature: per user state, how far to trust each of the
        # last `transition_depth` history items' successor counts (`transition_bonus`)
        self.transition_gate = (nn.Linear(d, cfg.transition_depth)
                                if cfg.item_loss_weight > 0 and cfg.transition_feature else None)
        # the transition memory (`onerec.transitions`), filled by `set_transitions` before
        # training; buffers, so the checkpoint and the exported graph carry it
        if cfg.transition_prior > 0 or cfg.transition_feature:
            n, k = item_codes.shape[0], cfg.transition_neighbors
            self.register_buffer("next_items", torch.zeros(n, k, dtype=torch.long))
            self.register_buffer("next_counts", torch.zeros(n, k))
            self.register_buffer("out_counts", torch.zeros(n))
        else:
            self.next_items = self.next_counts = self.out_counts = None
        self.apply(self._init)
        if self.next_item is not None:  # no last item: no Markov term
            with torch.no_grad():
                self.next_item.weight[0].zero_()
        if self.transition_gate is not None:  # start at weight 1 on every count: (1 + count)^1
            with torch.no_grad():
                self.transition_gate.weight.zero_()
                self.transition_gate.bias.fill_(math.log(math.e - 1.0))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # -- encoder ------------------------------------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """(n_items + 1, d) every item's input embedding: item id + sum of its code embeddings."""
        codes = self.code_table()
        return codes if self.item_emb is None else self.item_emb.weight + codes

    def code_table(self) -> torch.Tensor:
        """(n_items + 1, d) the sum of every item's semantic-ID code embeddings."""
        return self.code_emb(self.item_codes.long() + self.code_offsets).sum(-2)

    def context_table(self) -> torch.Tensor:
        """`item_table()` for one training step's contexts. With `model.item_id_dropout` p,
        each item's own vector is dropped for the step (whole, the kept ones rescaled by
        1 / (1 - p)), so its history slots read as its semantic-ID codes alone; inference and
        the item head's output table keep every vector."""
        p = self.cfg.item_id_dropout
        if p <= 0 or self.item_emb is None:
            return self.item_table()
        codes = self.code_table()
        keep = (torch.rand(codes.shape[0], 1, device=codes.device) >= p).to(codes.dtype)
        return codes + self.item_emb.weight * keep / (1.0 - p)

    def embed_items(self, items: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(..., N) item indices -> (..., N, d): item id + sum of semantic-ID code embeddings.

        With `table` (`item_table()`), rows are gathered from it: the same values, but the code
        embeddings are summed once per catalogue item instead of once per history slot, which
        in training (KuaiRand: 128 requests x 105 history slots, 7.6k items in all) is most
        of the encoder's memory traffic, forward and backward."""
        if table is not None:
            e = table[items]
        else:
            codes = self.item_codes[items].long() + self.code_offsets  # (..., N, L)
            e = self.code_emb(codes).sum(-2)
            if self.item_emb is not None:
                e = e + self.item_emb(items)
        return e * (items > 0).unsqueeze(-1)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory (B, M, d) and key-padding mask (B, M), True = attend."""
        b = batch.short.shape[0]
        dev = batch.short.device
        # training batches hold far more history slots than the catalogue has items; inference
        # (one user, exported graphs) embeds only the slots it has
        table = self.context_table() if self.training else None
        user = (self.user_emb(batch.user) + self.segment_emb.weight[0]).unsqueeze(1)
        s = batch.short.shape[1]
        short_items = batch.short
        if self.cfg.causal_encoder:  # oldest first: slot j holds the j-th item of the history
            short_items = left_align(batch.short)
        short = self.embed_items(short_items, table)
        if self.training and self.cfg.context_dropout > 0:  # item-level: the slot stays
            keep = torch.rand(b, s, 1, device=dev) >= self.cfg.context_dropout
            short = short * keep
        # causal: slot j is the j-th item; else positions count back from the request
        short = short + (self.short_pos.weight[:s] if self.cfg.causal_encoder
                         else self.short_pos.weight[-s:])
        short = short + self.segment_emb.weight[1]
        p = batch.pos.shape[1]
        pos = self.embed_items(batch.pos, table) + self.pos_pos.weight[-p:] + self.segment_emb.weight[2]
        long_items = self.embed_items(batch.long, table)
        long_mask = (batch.long > 0)
        # learned-query pooling; an empty lifelong history attends to a zero token
        long_mask = torch.cat([long_mask, torch.ones(b, 1, dtype=torch.bool, device=dev)], 1)
        long_items = torch.cat([long_items, torch.zeros(b, 1, long_items.shape[-1],
                                                        device=dev)], 1)
        q = self.long_queries.unsqueeze(0).expand(b, -1, -1)
        long = self.long_pool(q, long_items, long_mask[:, None, None, :]) + self.segment_emb.weight[3]
        x = self.input_drop(torch.cat([user, short, pos, long], dim=1))
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=dev), short_items > 0,
                          batch.pos > 0,
                          torch.ones(b, long.shape[1], dtype=torch.bool, device=dev)], dim=1)
        attn_mask = mask[:, None, None, :]
        if self.cfg.causal_encoder:
            attn_mask = attn_mask & causal_short_mask(x.shape[1], s, dev)
        for layer in self.encoder:
            x = layer(x, attn_mask)
        return self.enc_norm(x), mask

    # -- decoder ------------------------------------------------------------------------------
    def decoder_inputs(self, prefix: torch.Tensor) -> torch.Tensor:
        """(N, l) code prefix -> (N, l + 1, d) decoder input: BOS then the prefix codes."""
        n, length = prefix.shape
        bos = self.bos.expand(n, 1, -1)
        if length == 0:
            x = bos
        else:
            x = torch.cat([bos, self.code_emb(prefix + self.code_offsets[:length])], dim=1)
        return x + self.level_emb.weight[: length + 1]

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor, mem_mask: torch.Tensor,
               group: int = 1, memory_index: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder on (N, l) prefixes -> hidden (N, l+1, d) and the MoE balance loss.

        memory: (N / group, M, d); prefixes [i * group, (i + 1) * group) share memory row i.
        With `memory_index` (N,), prefix i reads memory row memory_index[i] (mem_mask is then
        per prefix): keys and values are projected once per memory row and gathered, so a
        request with many targets pays for one projection (training's compute compression).
        """
        x = self.decoder_inputs(prefix)
        attn_mask = mem_mask[:, None, None, :]
        balance = x.new_zeros(())
        for layer in self.decoder:
            kv = layer.cross_attn.project_kv(memory)
            if memory_index is not None:
                kv = (kv[0][memory_index], kv[1][memory_index])
            x, bl = layer(x, kv, attn_mask, group)
            balance = balance + bl
        return self.dec_norm(x), balance

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        return self.heads[level](hidden)

    def recent_items(self, short: torch.Tensor, req: torch.Tensor,
                     target_len: torch.Tensor | None) -> torch.Tensor | None:
        """(T, transition_depth) the most recent history items target t may see, most recent
        first (0: none): what the head's Markov term (column 0) and its transition feature look
        up; None without either (nothing computed, nothing exported). `short` is left-padded,
        most recent last; with a causal encoder target t sees the first `target_len[t]` items."""
        if self.next_item is None and self.transition_gate is None:
            return None
        depth = self.cfg.transition_depth
        if self.cfg.causal_encoder and target_len is not None:
            oldest_first = left_align(short)[req]
            col = target_len.unsqueeze(1) - 1 - torch.arange(depth, device=short.device)
            items = oldest_first.gather(1, col.clamp(0, short.shape[1] - 1))
            return items * (col >= 0)
        pad = short.new_zeros(short.shape[0], max(0, depth - short.shape[1]))
        return torch.cat([short.flip(1), pad], 1)[req, :depth]

    def user_state(self, memory: torch.Tensor, req: torch.Tensor, short_len: int,
                   target_len: torch.Tensor | None) -> torch.Tensor:
        """(T, d) the encoder output that summarises what target t may see: with a causal
        encoder the slot of its last visible short item (the user token if it sees none), else
        the most recent short slot, which attends to the whole context. Memory is laid out as
        [user, short (S), positive, lifelong]."""
        if self.cfg.causal_encoder and target_len is not None:
            slot = target_len  # memory index 1 + j holds short slot j; index 0 is the user
        else:
            slot = torch.full_like(req, short_len)
        return memory[req, slot]

    def rank_beam(self, memory: torch.Tensor, short: torch.Tensor, items: torch.Tensor,
                  scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Re-order a generated beam with the item head and the transition memory: (B, W)
        items (0: no item) and beam log-probabilities -> (ranking scores, order), best first;
        None with neither.

        score = beam log p + `item_score_weight` x item-head log p, then the transition
        memory's chain (`transition_scores`) over that. Only the beam's own items are ranked,
        so nothing enters the list from outside generation; a dead beam (-inf) stays dead. The
        head's user state is the one it was trained on: the last history slot a causal encoder
        sees (`user_state`)."""
        weight = self.cfg.item_score_weight
        head = self.item_query is not None and weight > 0
        chain = self.next_items is not None and self.cfg.transition_prior > 0
        if not head and not chain:
            return None
        if head:
            b, s = short.shape
            seen = (short > 0).sum(1) if self.cfg.causal_encoder else None
            req = torch.arange(b, device=short.device)
            state = self.user_state(memory, req, s, seen)
            logp = self.item_logits(state, self.recent_items(short, req, seen)).float()
            bonus = logp.log_softmax(-1).gather(1, items.clamp_min(0))
            scores = scores + weight * bonus.masked_fill(items <= 0, 0.0)
        if chain:
            scores = self.transition_scores(short, items, scores)
        return scores.topk(items.shape[1], dim=1)

    def transition_scores(self, short: torch.Tensor, items: torch.Tensor,
                          scores: torch.Tensor) -> torch.Tensor:
        """(B, S) left-padded histories (most recent last), (B, W) beam items and scores ->
        the log of the Dirichlet-smoothed chain (count(h -> item) + prior x p_beam(item)) /
        (count(h) + prior), p_beam the softmax of `scores` over the beam and the counts summed
        over the last `transition_depth` history items h, the j-th most recent weighted by
        `transition_decay` ** j. Without known history items (or with no counts for them) this
        is log p_beam: the beam's order is kept."""
        assert self.next_items is not None and self.next_counts is not None  # nosec B101
        assert self.out_counts is not None  # nosec B101 # type narrowing
        cfg = self.cfg
        count = torch.zeros_like(scores, dtype=torch.float32)
        total = torch.zeros_like(count[:, :1])
        for j in range(min(cfg.transition_depth, short.shape[1])):
            h, w = short[:, -1 - j], cfg.transition_decay ** j
            hit = self.next_items[h].unsqueeze(1) == items.unsqueeze(-1)  # (B, W, k)
            count = count + w * (hit.float() * self.next_counts[h].unsqueeze(1)).sum(-1)
            total = total + w * self.out_counts[h].unsqueeze(1)
        count = count.masked_fill(items <= 0, 0.0)
        p_beam = scores.float().softmax(-1)
        p = (count + cfg.transition_prior * p_beam) / (total + cfg.transition_prior)
        return torch.where(torch.isfinite(scores), p.clamp_min(1e-30).log(), scores)

    def set_transitions(self, table: TransitionTable) -> None:
        """Load a transition table (`onerec.transitions.count_transitions`) into the buffers."""
        if self.next_items is None or self.next_counts is None or self.out_counts is None:
            raise ValueError("model.transition_prior is 0: the model has no transition memory")
        if tuple(table.next_items.shape) != tuple(self.next_items.shape):
            raise ValueError(f"transition table: shape {tuple(table.next_items.shape)}, the "
                             f"model's is {tuple(self.next_items.shape)} (items x "
                             f"model.transition_neighbors)")
        dev = self.next_items.device
        self.next_items.copy_(torch.as_tensor(table.next_items, device=dev))
        self.next_counts.copy_(torch.as_tensor(table.next_counts, device=dev))
        self.out_counts.copy_(torch.as_tensor(table.out_counts, device=dev))

    def transition_table(self) -> TransitionTable | None:
        """The loaded transition table (None without a transition memory)."""
        if self.next_items is None or self.next_counts is None or self.out_counts is None:
            return None
        from onerec.transitions import TransitionTable  # onerec.stream imports this module

        return TransitionTable(self.next_items.cpu().numpy(), self.next_counts.cpu().numpy(),
                               self.out_counts.cpu().numpy())

    def item_logits(self, state: torch.Tensor, recent: torch.Tensor | None = None,
                    target: torch.Tensor | None = None) -> torch.Tensor:
        """(T, d) user states -> (T, n_items + 1) next-item scores over the whole catalogue
        (column 0, padding, is -inf). recent: (T, depth) each state's most recent history items
        (`recent_items`), which the Markov term and the transition feature need; target: (T,)
        the training targets, whose own pair the transition feature leaves out."""
        if self.item_query is None:
            raise ValueError("model.item_loss_weight is 0: no item head")
        if recent is None and (self.next_item is not None or self.transition_gate is not None):
            raise ValueError("model.markov_head / model.transition_feature need each state's "
                             "recent items")
        query = self.item_query(state)
        if self.next_item is not None and recent is not None:
            query = query + self.next_item(recent[:, 0])
        logits = query @ self.item_table().T
        if self.transition_gate is not None and recent is not None:
            logits = self.transition_bonus(state, recent, logits, target)
        logits[:, 0] = float("-inf")
        return logits

    def transition_bonus(self, state: torch.Tensor, recent: torch.Tensor, logits: torch.Tensor,
                         target: torch.Tensor | None) -> torch.Tensor:
        """Add the learned transition feature to (T, n_items + 1) head logits: for each of the
        recent history items h_j, softplus(gate_j(state)) x log(1 + count(h_j -> item)) on its
        table's successors, so p(item) grows as (1 + count)^w with a weight w the user state
        sets. In training (`target` given) each target's own (last item -> target) pair is left
        out of its count: the table counted it, and a test pair is never in the table, so the
        head learns on training data how far counts made by other users predict a new pair."""
        if self.next_items is None or self.next_counts is None or self.transition_gate is None:
            raise ValueError("model.transition_feature needs the transition table")
        weight = F.softplus(self.transition_gate(state)).to(logits.dtype)  # (T, depth)
        for j in range(recent.shape[1]):
            succ = self.next_items[recent[:, j]]  # (T, k); row 0 (no item) is empty
            count = self.next_counts[recent[:, j]]
            if j == 0 and target is not None:
                count = (count - (succ == target.unsqueeze(1)).to(count.dtype)).clamp_min(0.0)
            bonus = weight[:, j:j + 1] * torch.log1p(count).to(logits.dtype)
            logits = logits.scatter_add(1, succ, bonus)
        return logits

    def item_loss(self, memory: torch.Tensor, batch: Batch, req: torch.Tensor) -> torch.Tensor:
        """The item head's full-softmax loss on `batch`'s targets (memory: the encoder output
        per request, req: each target's request)."""
        if batch.target_items is None:
            raise ValueError("model.item_loss_weight > 0 needs batch.target_items")
        state = self.user_state(memory, req, batch.short.shape[1], batch.target_len)
        recent = self.recent_items(batch.short, req, batch.target_len)
        logits = self.item_logits(state, recent, batch.target_items)
        return F.cross_entropy(logits, batch.target_items)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Teacher-forced next-token loss on the targets' semantic IDs."""
        assert batch.target_codes is not None  # nosec B101 # type narrowing
        memory, mask = self.encode(batch)
        req = batch.target_req if batch.target_req is not None else torch.arange(
            memory.shape[0], device=memory.device)
        mask = mask[req]  # one encoder pass (and one K/V projection) per request
        if self.cfg.causal_encoder and batch.target_len is not None:
            mask = mask & visible_prefix(mask.shape[1], batch.short.shape[1], batch.target_len)
        codes = batch.target_codes.long()  # any int type (the model's own table is int32)
        read = memory.detach() if self.cfg.decoder_stop_gradient else memory
        hidden, balance = self.decode(codes[:, :-1], read, mask, memory_index=req)
        losses = [F.cross_entropy(self.heads[lv](hidden[:, lv]), codes[:, lv])
                  for lv in range(self.levels)]
        ntp = torch.stack(losses).mean()
        balance = balance / max(1, len(self.decoder))
        loss = ntp + self.cfg.balance_loss_weight * balance
        out = {"ntp_loss": ntp, "balance_loss": balance,
               "level_losses": torch.stack(losses).detach()}
        if self.item_query is not None:
            item = self.item_loss(memory, batch, req)
            loss = loss + self.cfg.item_loss_weight * item
            out["item_loss"] = item
        out["loss"] = loss
        return out

    def expert_load(self) -> torch.Tensor:
        """(n_decoder_layers, E) share of routed tokens per expert in the latest forward."""
        return torch.stack([layer.moe.last_load for layer in self.decoder])

    def num_params(self, active: bool = False) -> int:
        """Parameter count; `active` counts only top-k of E experts (compute-relevant)."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        per_expert = sum(p.numel() for p in self.decoder[0].moe.experts[0].parameters())
        inactive = (self.cfg.n_experts - self.cfg.top_k_experts) * per_expert * len(self.decoder)
        return total - inactive
