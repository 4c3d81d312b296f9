"""Batched recommendation with the reference generator: contexts in, ranked video ids out.

Used by offline evaluation and, until the fast generator lands, by serving. Users are processed
in chunks (the encoder runs once per user; beams share nothing yet: that is the fast path's
job). Legality is measured on the same generation: the share of generated semantic IDs that map
to a real video, which is 1 by construction when the valid-prefix constraint is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onerec.beam_search import PrefixIndex, beam_search, codes_to_items
from onerec.items import ItemSpace
from onerec.model import Batch, OneRec


@dataclass
class Recommendations:
    items: list[list[int]]  # per user, video ids best first
    legality: float  # mean share of generated IDs that are real videos


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(user=batch.user[start:stop], short=batch.short[start:stop],
                 pos=batch.pos[start:stop], long=batch.long[start:stop])


@torch.no_grad()
def recommend(model: OneRec, space: ItemSpace, contexts: Batch, *, beam_width: int, top_n: int,
              constrained: bool = True, index: PrefixIndex | None = None,
              chunk: int = 256) -> Recommendations:
    model.eval()
    index = index or PrefixIndex(space.codes, space.vocab_sizes)
    device = next(model.parameters()).device
    items: list[list[int]] = []
    legal: list[float] = []
    n = contexts.short.shape[0]
    for start in range(0, n, chunk):
        sub = _slice(contexts, start, min(n, start + chunk)).to(device)
        codes, scores = beam_search(model, sub, beam_width=beam_width, top_n=beam_width,
                                    index=index if constrained else None)
        idx, lg = codes_to_items(codes.cpu(), scores.cpu(), index, top_n)
        items.extend(space.to_ids(idx))
        legal.extend(lg)
    return Recommendations(items=items, legality=sum(legal) / max(1, len(legal)))
