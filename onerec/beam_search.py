"""Reference beam search over semantic IDs, constrained by the catalogue's trie.

This is the plain, obviously-correct path that the fast generator (KV cache, shared
cross-attention K/V, one exported graph) is checked against:
- the encoder runs once per user; every step re-runs the decoder on the full prefix (no KV
  cache); the beams of a user attend to its encoder output as one query block, so
  cross-attention keys and values are computed once per user and shared, not copied;
- beams start from BOS and expand level by level (semantic IDs are only L tokens long), keeping
  the `beam_width` best cumulative log-probabilities per user;
- with the catalogue's `ItemTrie` (onerec.trie, the one valid-prefix structure, shared with
  the fast generator), codes that no real item continues are masked to -inf at every level,
  so every returned semantic ID is a real item (legality 1 by construction); without it the
  model may generate IDs that map to no video, which the evaluation reports as legality;
- with the trie, the last token (the disambiguation token among items sharing the L
  codes) is renormalised over its legal codes (`disambiguation_logp`): an ID that only one item
  has scores the log-probability of its codes, with nothing taken off for the tie-breaker.
"""

from __future__ import annotations

import torch

from onerec.model import Batch, OneRec
from onerec.trie import ItemTrie


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
                trie: ItemTrie | None = None,
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
        if trie is None:
            logp = logits.log_softmax(-1)
        elif lv == model.levels - 1:
            logp = disambiguation_logp(logits, trie.allowed(prefixes))
        else:
            logp = logits.log_softmax(-1).masked_fill(~trie.allowed(prefixes), float("-inf"))
        total = (scores.unsqueeze(-1) + logp).view(b, -1)  # (B, W*K)
        k = model.vocab_sizes[lv]
        width = min(beam_width, total.shape[1])
        scores, idx = total.topk(width, dim=-1)
        parent, code = idx // k, idx % k
        prefixes = torch.cat([prefixes.gather(1, parent.unsqueeze(-1).expand(-1, -1, lv)),
                              code.unsqueeze(-1)], dim=-1)
    n = min(top_n, prefixes.shape[1])
    return prefixes[:, :n], scores[:, :n]


def codes_to_items(codes: torch.Tensor, scores: torch.Tensor, trie: ItemTrie,
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
            hit = trie.items(tuple(sid))
            n_legal += bool(hit)
            for i in hit:
                if i not in items:
                    items.append(i)
        out.append(items[:top_n])
        legal.append(n_legal / max(1, n_generated))
    return out, legal
