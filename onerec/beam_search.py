"""Reference beam search over semantic IDs, and the valid-prefix index for constrained decoding.

This is the plain, obviously-correct path that the fast generator (KV cache, shared
cross-attention K/V, one exported graph) is checked against:
- the encoder runs once per user; every step re-runs the decoder on the full prefix (no KV
  cache); the beams of a user attend to its encoder output as one query block, so
  cross-attention keys and values are computed once per user and shared, not copied;
- beams start from BOS and expand level by level (semantic IDs are only L tokens long), keeping
  the `beam_width` best cumulative log-probabilities per user;
- with a `PrefixIndex`, codes that no real item continues are masked to -inf at every level,
  so every returned semantic ID is a real item (legality 1 by construction); without it the
  model may generate IDs that map to no video, which the evaluation reports as legality;
- with a `PrefixIndex`, the last token (the disambiguation token among items sharing the L
  codes) is renormalised over its legal codes (`disambiguation_logp`): an ID that only one item
  has scores the log-probability of its codes, with nothing taken off for the tie-breaker.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from onerec.model import Batch, OneRec


class PrefixIndex:
    """For each level l, which codes may follow each length-l prefix of a real item's ID."""

    def __init__(self, item_codes: torch.Tensor, vocab_sizes: list[int]) -> None:
        codes = item_codes[1:].long()  # row 0 is padding
        self.vocab_sizes = list(vocab_sizes)
        self.radix = torch.tensor([1, *vocab_sizes[:-1]]).cumprod(0)  # mixed-radix weights
        self.keys: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        for lv, k in enumerate(vocab_sizes):
            key = self.encode(codes[:, :lv])
            uniq, inverse = torch.unique(key, return_inverse=True)
            mask = torch.zeros(len(uniq), k, dtype=torch.bool)
            mask[inverse, codes[:, lv]] = True
            self.keys.append(uniq)
            self.masks.append(mask)
        self.items_by_sid: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, row in enumerate(codes.tolist(), start=1):
            self.items_by_sid[tuple(row)].append(i)

    def encode(self, prefix: torch.Tensor) -> torch.Tensor:
        if prefix.shape[-1] == 0:
            return torch.zeros(prefix.shape[:-1], dtype=torch.long, device=prefix.device)
        return (prefix * self.radix[: prefix.shape[-1]].to(prefix.device)).sum(-1)

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes -> (..., K_l) bool mask of codes a real item continues with."""
        lv = prefix.shape[-1]
        keys, masks = self.keys[lv].to(prefix.device), self.masks[lv].to(prefix.device)
        q = self.encode(prefix)
        pos = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
        found = keys[pos] == q
        return masks[pos] & found.unsqueeze(-1)

    def items(self, sid: tuple[int, ...]) -> list[int]:
        return self.items_by_sid.get(tuple(sid), [])


def disambiguation_logp(logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the last token (the disambiguation token) renormalised over `legal`.

    The last token only tells apart the items that share the L RQ-Kmeans codes (its rank among
    them), so under the valid-prefix constraint its distribution is taken over the legal codes
    alone: the beam's score is then the log-probability of the item given its codes' prefix.
    An ID that one item has (nearly all: the collision rate is a few %) gets log 1 = 0 exactly,
    which is what lets the fast generator skip the decoder step for those beams. Rows with no
    legal code (dead beams) are -inf throughout.
    """
    alive = legal.any(-1, keepdim=True)
    masked = logits.float().masked_fill(~legal, float("-inf")).masked_fill(~alive, 0.0)
    return masked.log_softmax(-1).masked_fill(~legal, float("-inf"))


@torch.no_grad()
def beam_search(model: OneRec, batch: Batch, *, beam_width: int, top_n: int,
                index: PrefixIndex | None = None,
                share_memory: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """-> codes (B, top_n, L) and their log-probabilities (B, top_n), best first.

    `share_memory=False` is the textbook form (each beam gets its own copy of the user's
    encoder output, so cross-attention keys/values are projected per beam): same result, the
    baseline that `bench.generation` also reports.
    """
    if top_n > beam_width:
        raise ValueError(f"top_n={top_n} must be <= beam_width={beam_width}")
    model.eval()
    memory, mask = model.encode(batch)
    b = memory.shape[0]
    dev = memory.device
    prefixes = torch.zeros(b, 1, 0, dtype=torch.long, device=dev)  # (B, W, l)
    scores = torch.zeros(b, 1, device=dev)
    for lv in range(model.levels):
        w = prefixes.shape[1]
        flat = prefixes.reshape(b * w, lv)
        if share_memory:  # beams share the user's memory
            hidden, _ = model.decode(flat, memory, mask, group=w)
        else:
            hidden, _ = model.decode(flat, memory.repeat_interleave(w, 0),
                                     mask.repeat_interleave(w, 0))
        logits = model.level_logits(hidden[:, -1], lv).view(b, w, -1)
        if index is None:
            logp = logits.log_softmax(-1)
        elif lv == model.levels - 1:
            logp = disambiguation_logp(logits, index.allowed(prefixes))
        else:
            logp = logits.log_softmax(-1).masked_fill(~index.allowed(prefixes), float("-inf"))
        total = (scores.unsqueeze(-1) + logp).view(b, -1)  # (B, W*K)
        k = model.vocab_sizes[lv]
        width = min(beam_width, total.shape[1])
        scores, idx = total.topk(width, dim=-1)
        parent, code = idx // k, idx % k
        prefixes = torch.cat([prefixes.gather(1, parent.unsqueeze(-1).expand(-1, -1, lv)),
                              code.unsqueeze(-1)], dim=-1)
    n = min(top_n, prefixes.shape[1])
    return prefixes[:, :n], scores[:, :n]


def codes_to_items(codes: torch.Tensor, scores: torch.Tensor, index: PrefixIndex,
                   top_n: int) -> tuple[list[list[int]], list[float]]:
    """Map generated semantic IDs to item indices (best first, up to top_n per user).

    Returns the item lists and, per user, the share of generated IDs that map to a real item
    (legality).
    """
    out, legal = [], []
    for row, sc in zip(codes.tolist(), scores.tolist(), strict=True):
        items: list[int] = []
        n_legal = n_generated = 0
        for sid, s in zip(row, sc, strict=True):
            if s == float("-inf"):  # constrained beams with no legal continuation
                continue
            n_generated += 1
            hit = index.items(tuple(sid))
            n_legal += bool(hit)
            for i in hit:
                if i not in items:
                    items.append(i)
        out.append(items[:top_n])
        legal.append(n_legal / max(1, n_generated))
    return out, legal
