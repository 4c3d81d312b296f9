"""The rewards ECPO optimises: preference (P-Score), format (legal IDs) and industrial rules.

OneRec (arXiv 2506.13695, section 4.2) aligns the generator with three kinds of reward:
- preference: the P-Score of the video a generated semantic ID names (`onerec.reward`);
- format: a generated semantic ID must name a real video. Rewarding every legal sample
  squeezes probability onto a few IDs the model already likes, so only `k` legal samples per
  group, drawn at random, carry the positive format advantage; illegal samples carry the
  negative one (`format_advantage`). `align.format_select: topk` picks the k most probable
  legal samples instead, the rule the paper warns against, kept to show why
  (`bench.align_curves`). Legality is binary and would swamp a normalisation shared
  with the P-Score, so the two advantages are normalised separately and added;
- industrial: business rules the platform sets on top of user preference, from Config
  (`align.demoted_authors` lose `align.author_penalty`; videos uploaded within
  `align.fresh_days` of the request gain `align.fresh_bonus`); and diversity: a sample loses
  `align.diversity_weight` times the share of its group's other legal samples in the same
  first-level semantic-ID cluster (`redundancy`). The P-Score alone rewards the cluster it
  likes best for every sample, and alignment then fills whole slates from one cluster
  (intra-list diversity 0.82 -> 0.35 in bench.alignment); penalising a sample by how crowded
  its cluster is within the group moves probability towards the policy's other clusters.
Duration-aware shaping (OneRec-V2) enters through the reward model's watch target
(`onerec.reward.DurationShaper`), which the P-Score fuses.

Every function takes (B, G) tensors: B users, G samples per user (a GRPO group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from onerec.config import FORMAT_SELECTS, AlignConfig
from onerec.evaluate import DAY_MS
from onerec.model import Batch
from onerec.reward import RewardModel


def preference_reward(reward_model: RewardModel, contexts: Batch, items: torch.Tensor,
                      ) -> torch.Tensor:
    """(B, G) item indices (0 = no video) -> (B, G) P-Score; samples naming no video score 0."""
    return reward_model.pscore(contexts, items)


def format_choice(legal: torch.Tensor, k: int, *, select: str = "random",
                  logp: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  ) -> torch.Tensor:
    """(B, G) bool -> (B, G) bool: the (at most) `k` legal samples per row that keep the
    positive format advantage.

    select "random": drawn uniformly among the legal samples, independent of the policy (the
    paper's rule). "topk": the `k` legal samples with the highest `logp` (B, G), the policy's
    log-probability; ties go to the lower sample index. Rows with <= k legal samples choose
    all of them under either rule.
    """
    if select == "random":
        key = torch.rand(legal.shape, generator=generator).to(legal.device)
    elif select == "topk":
        if logp is None:
            raise ValueError("format_choice(select='topk') needs the samples' logp")
        # ascending key, first = chosen: the most probable first; a stable sort keeps index order
        key = -logp.detach().double()
    else:
        raise ValueError(f"align.format_select: must be one of {', '.join(FORMAT_SELECTS)}, "
                         f"got {select!r}")
    key = key.masked_fill(~legal, float("inf"))  # illegal last
    rank = torch.argsort(key, dim=-1, stable=True).argsort(-1)  # 0 = first chosen
    return legal & (rank < k)


def format_advantage(legal: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """(B, G) bool legality, (B, G) bool `format_choice` -> (B, G) advantage of the format reward.

    The legality reward (1 legal, 0 illegal) is group-normalised; illegal samples keep their
    (negative) advantage, the legal samples `chosen` keep their (positive) one, the other legal
    samples get 0. A row with no illegal sample has nothing to learn: all 0. The choice is a
    separate step (`format_choice`: random-k, the paper's rule, or top-k by log-probability)
    so the caller that logs which samples it rewarded draws once.
    """
    r = legal.float()
    mean = r.mean(-1, keepdim=True)
    std = r.std(-1, unbiased=False, keepdim=True)
    adv = (r - mean) / (std + 1e-6)
    return torch.where(~legal | chosen, adv, torch.zeros_like(adv))


def redundancy(keys: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, G) cluster keys (first-level codes), (B, G) bool -> (B, G) share in [0, 1] of each
    valid sample's *other* valid group members with the same key; invalid samples get 0.

    A group whose valid samples all share one cluster scores 1 each; all distinct, 0. The
    diversity reward is -align.diversity_weight x this, so a duplicate is penalised by exactly
    the weight when it is duplicated by every other sample."""
    same = (keys.unsqueeze(-1) == keys.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)
    same &= ~torch.eye(keys.shape[-1], dtype=torch.bool, device=keys.device)
    others = (valid.sum(-1, keepdim=True) - 1).clamp_min(1)
    return torch.where(valid, same.sum(-1) / others, torch.zeros(()).to(keys.device)).float()


@dataclass
class IndustrialRules:
    """Per-item-index rule inputs: demoted (N + 1,) bool, upload_ms (N + 1,) float64."""

    demoted: torch.Tensor
    upload_ms: torch.Tensor
    author_penalty: float
    fresh_ms: float
    fresh_bonus: float

    @classmethod
    def from_config(cls, cfg: AlignConfig, items: pd.DataFrame | None,
                    item_ids: np.ndarray) -> IndustrialRules:
        """items: the item table (video_id, author_id, upload_date YYYYMMDD); item_ids: the
        video id of each item index i + 1 (ItemSpace.item_ids)."""
        n = len(item_ids) + 1
        demoted = torch.zeros(n, dtype=torch.bool)
        upload = torch.full((n,), float("nan"), dtype=torch.float64)
        if items is not None and len(items):
            table = items.drop_duplicates("video_id").set_index("video_id")
            ids = pd.Index(np.asarray(item_ids, dtype=np.int64))
            known = ids.isin(table.index)
            rows = table.reindex(ids[known])
            slot = torch.from_numpy(np.flatnonzero(known) + 1)
            if cfg.demoted_authors:
                bad = rows["author_id"].isin(cfg.demoted_authors).to_numpy()
                demoted[slot] = torch.from_numpy(bad)
            if "upload_date" in rows:
                dates = pd.to_datetime(rows["upload_date"].astype("Int64").astype(str),
                                       format="%Y%m%d", errors="coerce", utc=True)
                ms = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
                upload[slot] = torch.from_numpy(ms.astype("float64").to_numpy())
        return cls(demoted=demoted, upload_ms=upload, author_penalty=cfg.author_penalty,
                   fresh_ms=cfg.fresh_days * DAY_MS, fresh_bonus=cfg.fresh_bonus)

    def __call__(self, items: torch.Tensor, now_ms: torch.Tensor) -> torch.Tensor:
        """(B, G) item indices, (B,) request times -> (B, G) reward (0 for index 0)."""
        items = items.cpu()
        r = -self.author_penalty * self.demoted[items].double()
        if self.fresh_ms > 0:
            age = now_ms.double().cpu().unsqueeze(-1) - self.upload_ms[items]
            fresh = (age >= 0) & (age < self.fresh_ms)  # NaN (unknown upload) compares False
            r = r + self.fresh_bonus * fresh.double()
        return (r * (items > 0)).float()
