"""RM selection: the reward model used at inference time, without changing the generator.

"OneRec with RM selection" (OneRec, arXiv 2506.13695, section 4): generate N candidates with
beam search, re-score them with the P-Score, keep the best k. It needs no training beyond the
reward model's, so it is the baseline that aligning the generator with ECPO (`onerec.ecpo`)
is compared with in `bench.alignment`; serving offers it as a reranker
(`serving.rm_selection`).

`top_m` restricts the re-ranking to the beam's first M candidates. Re-ranking the whole beam
lowers the aligned model's long-view Recall@10 (bench.alignment, docs/alignment.md): the
P-Score barely separates the beam's head from its tail, so a large share of its top 10 came
from the beam's last half, where the users' real long views are markedly rarer than in the
first 10. The generator's order carries the
user's own taste; the P-Score carries what KuaiRand users engage with in general. Letting the
P-Score choose only among the first M keeps the first and adds some of the second; the whole
beam gains more on the behaviour model that judges alignment.

`code_cap` is the operator's per-slate diversity rule: at most C of the k picked videos share a
first-level semantic ID (the coarsest cluster of the codebook, what intra-list diversity in
`bench.alignment` counts). The P-Score rewards general appeal, and appealing videos cluster:
over the whole beam RM selection piled one cluster into the slate and cut ILD up to 14%
(docs/alignment.md). The cap walks the P-Score order and passes over a video whose cluster
already holds C picks; if the candidates cannot fill k under the cap, the passed-over ones fill
the rest in P-Score order, so the slate never shrinks. When no passed-over video is needed, a
slate of 10 under a cap of 4 has at most 13 of its 45 pairs in one cluster (ILD >= 0.71).
"""

from __future__ import annotations

import numpy as np
import torch

from onerec.model import Batch
from onerec.reward.model import RewardModel


@torch.no_grad()
def rm_select(reward_model: RewardModel, contexts: Batch, candidate_items: list[list[int]],
              k: int, top_m: int | None = None,
              code_cap: int | None = None) -> list[list[int]]:
    """OneRec with RM selection: re-rank each user's generated candidates by P-Score, keep k.

    contexts: the users' Batch in the codebook's item-index space (as the generator got it);
    candidate_items: per user, the generated video ids (beam order, best first). Duplicates
    count once; videos the reward model does not know go last, in beam order. Returns per user
    up to k video ids, best P-Score first (ties keep beam order). `top_m`: only each beam's
    first M distinct candidates compete (None: all of them). `code_cap`: at most C of the k share
    a first-level semantic ID while others can fill the slate (None: no cap; see above).
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    if top_m is not None and top_m <= 0:
        raise ValueError(f"top_m must be > 0 or None, got {top_m}")
    if code_cap is not None and code_cap <= 0:
        raise ValueError(f"code_cap must be > 0 or None, got {code_cap}")
    if len(candidate_items) != contexts.short.shape[0]:
        raise ValueError(f"{len(candidate_items)} candidate lists for "
                         f"{contexts.short.shape[0]} contexts")
    uniq = [list(dict.fromkeys(int(v) for v in row))[:top_m] for row in candidate_items]
    width = max((len(r) for r in uniq), default=0)
    if width == 0:
        return [[] for _ in uniq]
    flat = np.fromiter((v for row in uniq for v in row), dtype=np.int64)
    rows = reward_model.item_rows(flat)
    padded = np.zeros((len(uniq), width), dtype=np.int64)
    mask = np.arange(width) < np.array([len(r) for r in uniq])[:, None]
    padded[mask] = rows
    items = torch.from_numpy(padded)
    scores = reward_model.pscore(contexts, items).float().cpu().numpy()
    # first-level semantic ID per candidate (-1: a video the reward model does not know)
    clusters = (np.where(padded > 0, reward_model.item_codes[:, 0].cpu().numpy()[padded], -1)
                if code_cap is not None else None)
    out = []
    for r, row in enumerate(uniq):  # numpy per row: tensor indexing per candidate cost more
        known = np.flatnonzero(padded[r, :len(row)] > 0)  # than the reward model itself
        unknown = np.flatnonzero(padded[r, :len(row)] == 0)
        order = np.concatenate([known[np.argsort(-scores[r, known], kind="stable")], unknown])
        if code_cap is not None and clusters is not None:
            order = _capped(order, clusters[r], k, code_cap)
        out.append([row[j] for j in order[:k].tolist()])
    return out


def _capped(order: np.ndarray, clusters: np.ndarray, k: int, cap: int) -> np.ndarray:
    """The first k of `order` with at most `cap` per cluster (-1: no cluster), then the
    passed-over candidates in their order while the slate is short of k."""
    taken: list[int] = []
    passed: list[int] = []
    held: dict[int, int] = {}
    for j in order.tolist():
        c = int(clusters[j])
        if c >= 0 and held.get(c, 0) >= cap:
            passed.append(j)
            continue
        held[c] = held.get(c, 0) + 1
        taken.append(j)
        if len(taken) == k:
            break
    return np.asarray(taken + passed[:k - len(taken)], dtype=np.int64)
