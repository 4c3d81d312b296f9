"""Batched recommendation: contexts in, ranked video ids out (offline evaluation, benches).

Users are processed in chunks. The fast generator (`onerec.generate`: KV cache, shared
cross-attention K/V, trie constraint; tested equal to the reference) is the default; `fast=False`
runs the reference beam search instead. Legality is measured on the same generation: the share
of generated semantic IDs that map to a real video, 1 by construction with the valid-prefix
constraint on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from onerec.beam_search import beam_search, codes_to_items
from onerec.items import ItemSpace
from onerec.model import Batch, OneRec
from onerec.trie import ItemTrie


@dataclass
class Recommendations:
    items: list[list[int]]  # per user, video ids best first
    legality: float  # mean share of generated IDs that are real videos


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(user=batch.user[start:stop], short=batch.short[start:stop],
                 pos=batch.pos[start:stop], long=batch.long[start:stop])


@torch.no_grad()
def recommend(model: OneRec, space: ItemSpace, contexts: Batch, *, beam_width: int, top_n: int,
              constrained: bool = True, trie: ItemTrie | None = None,
              chunk: int = 256, fast: bool = True,
              log: Callable[[dict[str, Any]], None] | None = None) -> Recommendations:
    """`log({"step": users done})` after each chunk (a progress reporter, `onerec.progress`)."""
    model.eval()
    if trie is None:
        trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    if fast:
        return _recommend_fast(model, space, contexts, trie, beam_width=beam_width,
                               top_n=top_n, constrained=constrained, chunk=chunk, log=log)
    device = next(model.parameters()).device
    items: list[list[int]] = []
    legal: list[float] = []
    n = contexts.short.shape[0]
    for start in range(0, n, chunk):
        sub = _slice(contexts, start, min(n, start + chunk)).to(device)
        codes, scores = beam_search(model, sub, beam_width=beam_width, top_n=beam_width,
                                    trie=trie if constrained else None)
        codes, scores = _rank_reference(model, sub, codes, scores, trie)
        idx, lg = codes_to_items(codes.cpu(), scores.cpu(), trie, top_n)
        items.extend(space.to_ids(idx))
        legal.extend(lg)
        if log is not None:
            log({"step": len(items)})
    return Recommendations(items=items, legality=sum(legal) / max(1, len(legal)))


def _rank_reference(model: OneRec, sub: Batch, codes: torch.Tensor, scores: torch.Tensor,
                    trie: ItemTrie) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference beam, re-ordered by the model's item head as the fast generator does
    (the reference path encodes the context again rather than reach into `beam_search`)."""
    if model.item_query is None or model.cfg.item_score_weight == 0:
        return codes, scores
    items = trie.walk(codes)  # 0 where a beam is no item (unconstrained)
    memory, _ = model.encode(sub)
    ranked = model.rank_beam(memory, sub.short, items, scores)
    if ranked is None:
        return codes, scores
    new_scores, order = ranked
    return codes.gather(1, order.unsqueeze(-1).expand_as(codes)), new_scores


def _recommend_fast(model: OneRec, space: ItemSpace, contexts: Batch, trie: ItemTrie, *,
                    beam_width: int, top_n: int, constrained: bool, chunk: int,
                    log: Callable[[dict[str, Any]], None] | None) -> Recommendations:
    from onerec.generate import generate

    items: list[list[int]] = []
    legal: list[float] = []
    n = contexts.short.shape[0]
    for start in range(0, n, chunk):
        sub = _slice(contexts, start, min(n, start + chunk))
        gen = generate(model, sub, beam_width=beam_width, trie=trie, constrained=constrained)
        idx, scores = gen.items.cpu(), gen.scores.cpu()
        alive = torch.isfinite(scores)
        legal.extend(((idx > 0) & alive).sum(1).div(alive.sum(1).clamp_min(1)).tolist())
        for row, ok in zip(idx.tolist(), (alive & (idx > 0)).tolist(), strict=True):
            picked = list(dict.fromkeys(i for i, good in zip(row, ok, strict=True) if good))
            items.append(picked[:top_n])
        if log is not None:
            log({"step": len(items)})
    return Recommendations(items=space.to_ids(items),
                           legality=sum(legal) / max(1, len(legal)))
