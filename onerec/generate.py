"""Fast generation: beam search over semantic IDs with a KV cache, shared memory and a trie.

Same search as the reference `onerec.beam_search.beam_search` (same top-N, ties aside; tested),
organised for speed and for export as one graph (`onerec.export.onnx`):
- the encoder runs once per user, and each decoder layer projects the encoder output to
  cross-attention keys/values once per user; the W beams of a user attend to them as one block
  of W queries (the `group` trick of `DecoderLayer`), so they are never copied per beam;
- a self-attention KV cache: each step feeds only the newest token of every beam, and the cache
  is reordered by parent beam after each top-k (L steps, so it stays tiny);
- under the constraint the last token (which only tells apart items sharing the L codes) is
  renormalised over its legal codes, so a beam whose ID one item alone has scores log 1 = 0
  there and skips the last decoder step: about 40 % of the decoded tokens at beam 512, exact
  (`Generator.disambiguate`, the reference's `disambiguation_logp`);
- the valid-prefix constraint is the catalogue's trie in CSR form (`onerec.trie.ItemTrie`):
  each beam carries its node id, a gather of its F_l candidate codes gives the legal mask, the
  chosen code's position among them gives the next node id, and the last node id *is* the
  item, so the output is item indices (B, W) with scores, which is what serving needs;
- batched over users; beam widths up to `serve.max_beam_width`; the width at level l is
  min(W, width_{l-1} x K_l), as in the reference;
- precision: float32 on CPU; on CUDA fp16 (default) or bf16 autocast, with log-softmax and
  the running scores in float32 so that beam order does not drift with the dtype;
- the MoE feed-forward is `MoEFeedForward.infer` (`moe="sparse"` or `"dense"`).

The layer math is the model's own: `DecoderLayer.step` (KV cache, fused q/kv projection) and
`DecoderLayer.cross_memory` (per-user cross-attention K/V); this module holds only the search
(top-k, the trie constraint, cache reordering, disambiguation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from onerec.model import Batch, OneRec
from onerec.moe import MoEMode
from onerec.trie import ItemTrie, csr_candidates, csr_child, legal_mask

__all__ = ["Generation", "Generator", "MoEMode", "generate", "level_widths", "resolve_dtype"]


@dataclass
class Generation:
    """Beams best first. items: (B, W) item index, 0 where the ID is no item (or the beam has
    no legal continuation, score -inf); scores: (B, W) log-probabilities; codes: (B, W, L)."""

    items: torch.Tensor
    scores: torch.Tensor
    codes: torch.Tensor


def level_widths(vocab_sizes: list[int], beam_width: int) -> list[int]:
    """Beams kept after each level: min(beam_width, previous x K_l); the last is the output W."""
    out, w = [], 1
    for k in vocab_sizes:
        w = min(beam_width, w * k)
        out.append(w)
    return out


class Generator(nn.Module):
    """Beam search as a module: forward(user, short, pos, long) -> (items, scores, codes).

    user: (B,); short: (B, S); pos: (B, P); long: (B, G) int64 item indices (0 = padding);
    see `Generation` for the outputs. `constrained` masks codes that no real item continues.
    The trie is always used to name items, so unconstrained beams that are no item get 0.
    """

    def __init__(self, model: OneRec, trie: ItemTrie, *, beam_width: int,
                 constrained: bool = True, moe: MoEMode = "sparse") -> None:
        super().__init__()
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        if trie.vocab_sizes != model.vocab_sizes:
            raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != model's {model.vocab_sizes}")
        self.model = model.eval()
        self.beam_width = beam_width
        self.constrained = constrained
        self.moe = moe
        for i, layer in enumerate(model.decoder):  # fused q/kv weights, made once
            w, bias = layer.self_attn.fused_qkv()
            self.register_buffer(f"qkv_w{i}", w, persistent=False)
            self.register_buffer(f"qkv_b{i}", bias, persistent=False)
        self.dead = [trie.dead(lv) for lv in range(trie.levels)]
        self.fanout = list(trie.fanout)
        for lv in range(trie.levels):
            self.register_buffer(f"offsets{lv}", trie.offsets[lv], persistent=False)
            self.register_buffer(f"codes{lv}", trie.codes[lv], persistent=False)
        self.register_buffer("leaf_item", trie.leaf_item, persistent=False)

    def qkv(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder layer i's `Attention.fused_qkv()`."""
        return getattr(self, f"qkv_w{i}"), getattr(self, f"qkv_b{i}")

    def widths(self) -> list[int]:
        return level_widths(self.model.vocab_sizes, self.beam_width)

    def forward(self, user: torch.Tensor, short: torch.Tensor, pos: torch.Tensor,
                long: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        memory, mem_mask = m.encode(Batch(user=user, short=short, pos=pos, long=long))
        b, _, d = memory.shape
        cross = [layer.cross_memory(memory, mem_mask) for layer in m.decoder]  # once per user
        caches: list[torch.Tensor | None] = [None] * len(m.decoder)
        scores = memory.new_zeros(b, 1, dtype=torch.float32)
        node = torch.zeros(b, 1, dtype=torch.long, device=memory.device)
        codes = torch.zeros(b, 1, 0, dtype=torch.long, device=memory.device)
        x = (m.bos + m.level_emb.weight[0]).expand(b, d)
        users = torch.arange(b, device=memory.device).unsqueeze(1)
        parents: torch.Tensor | None = None  # the last level's cache rows (constrained)
        for lv, k in enumerate(m.vocab_sizes):
            w, fan = scores.shape[1], self.fanout[lv]
            cand, first = csr_candidates(getattr(self, f"offsets{lv}"),
                                         getattr(self, f"codes{lv}"), node, fan, k)  # (B, w, F)
            if self.constrained and lv == m.levels - 1:
                logp = self.disambiguate(x, caches, parents, cross, legal_mask(cand, k))
            else:
                for i, layer in enumerate(m.decoder):
                    x, caches[i] = layer.step(x, caches[i], cross[i], w, self.qkv(i), self.moe)
                logp = m.heads[lv](m.dec_norm(x)).float().log_softmax(-1).view(b, w, k)
                if self.constrained:
                    logp = logp.masked_fill(~legal_mask(cand, k), float("-inf"))
            width = min(self.beam_width, w * k)
            scores, idx = (scores.unsqueeze(-1) + logp).view(b, w * k).topk(width, dim=-1)
            parent, code = idx // k, idx % k
            node = csr_child(cand.gather(1, parent.unsqueeze(-1).expand(-1, -1, fan)),
                             first.gather(1, parent), code, self.dead[lv])
            codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, lv)),
                               code.unsqueeze(-1)], dim=-1)
            if lv + 1 < m.levels:  # feed the chosen codes; reorder the caches by parent beam
                rows = (parent + users * w).reshape(-1)
                if self.constrained and lv + 2 == m.levels:
                    parents = rows  # the last step gathers just the beams that run it
                else:
                    caches = [c.index_select(0, rows) for c in caches if c is not None]
                x = m.code_emb(code.reshape(-1) + m.code_offsets[lv]) + m.level_emb.weight[lv + 1]
        items = self.leaf_item[node].long()
        ranked = m.rank_beam(memory, short, items, scores)  # the item head, if the model has one
        if ranked is not None:
            scores, order = ranked
            items = items.gather(1, order)
            codes = codes.gather(1, order.unsqueeze(-1).expand_as(codes))
        return items, scores, codes

    def disambiguate(self, x: torch.Tensor, caches: list, parents: torch.Tensor | None,
                     cross: list, legal: torch.Tensor) -> torch.Tensor:
        """The last level under the constraint: (B, w, K) log-probabilities of the
        disambiguation token, renormalised over the legal codes as in the reference
        (`onerec.beam_search.disambiguation_logp`).

        A beam whose L codes one item alone has gets log 1 = 0 without running the decoder;
        only the beams whose ID several items share (a few % of them) take the last decoder
        step. They are gathered across users into one block of N' rows, each attending to its
        own user's cross-attention K/V (gathered per row: N' is small). `parents`: the cache
        row of each beam (the caches are not reordered for this level; None: in order).
        """
        m = self.model
        b, w, k = legal.shape
        flat = legal.reshape(b * w, k)
        rows = (flat.sum(-1) > 1).nonzero().squeeze(1)  # beams whose ID several items share
        users = torch.div(rows, w, rounding_mode="floor")
        h = x.index_select(0, rows)
        cache_rows = rows if parents is None else parents.index_select(0, rows)
        for i, layer in enumerate(m.decoder):
            mine = tuple(t.index_select(0, users) for t in cross[i])
            cache = None if caches[i] is None else caches[i].index_select(0, cache_rows)
            h, _ = layer.step(h, cache, mine, 1, self.qkv(i), self.moe)
        logits = m.heads[m.levels - 1](m.dec_norm(h)).float()
        part = logits.masked_fill(~flat.index_select(0, rows), float("-inf")).log_softmax(-1)
        logp = torch.zeros(b * w, k, device=x.device).masked_fill(~flat, float("-inf"))
        return logp.index_copy(0, rows, part).view(b, w, k)


def resolve_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """float32 on CPU; fp16 by default on CUDA (bf16 on request)."""
    if device.type != "cuda":
        if dtype not in (None, torch.float32):
            raise ValueError(f"dtype {dtype} needs CUDA; generation on {device} is float32")
        return torch.float32
    if dtype not in (None, torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    return dtype or torch.float16


@torch.inference_mode()
def generate(model: OneRec, batch: Batch, *, beam_width: int, trie: ItemTrie,
             constrained: bool = True, dtype: torch.dtype | None = None,
             moe: MoEMode = "sparse") -> Generation:
    """Beam search for a batch of users -> `Generation` (all `widths()[-1]` beams, best first)."""
    device = next(model.parameters()).device
    gen = Generator(model, trie.to(device), beam_width=beam_width, constrained=constrained,
                    moe=moe)
    batch = batch.to(device)
    args = (batch.user, batch.short, batch.pos, batch.long)
    dt = resolve_dtype(device, dtype)
    if dt == torch.float32:
        items, scores, codes = gen(*args)
    else:
        with torch.autocast(device_type="cuda", dtype=dt):
            items, scores, codes = gen(*args)
    return Generation(items=items, scores=scores, codes=codes)
