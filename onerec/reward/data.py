"""Reward-model data: every impression of the log, with its request context and its labels.

The P-Score model is trained on impression logs, every impression and not only positives
(a model of what users prefer must see what they passed over), with the same request
contexts as pretraining: the user's behaviour strictly before the impression
(`onerec.stream.requests_from_events`), read shorter (`reward.max_seq_len`,
`reward.max_pos_seq_len`, no lifelong sequence). `RewardData.split` cuts it in time, so the
held-out days are evaluated on contexts the model never trained on; `impression_batch` turns
impressions into one forward pass (each request encoded once, however many impressions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from onerec.config import Config
from onerec.model import Batch
from onerec.reward.shaper import DurationShaper, event_labels
from onerec.stream import Requests, requests_from_events


@dataclass
class RewardData:
    """Impressions with their request contexts and labels (every impression is a target)."""

    reqs: Requests  # contexts; targets = the impressions (target_rows: their event rows)
    labels: np.ndarray  # (T, 6) in TASKS order
    target_req: np.ndarray  # (T,) request of each impression
    target_time: np.ndarray  # (T,) request time of each impression

    def split(self, cut_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Impression indices before the cut (training) and from it on (held out)."""
        before = self.target_time < cut_ms
        return np.flatnonzero(before), np.flatnonzero(~before)


def reward_data(events: pd.DataFrame, item_index: dict[int, int], cfg: Config,
                shaper: DurationShaper, *, history: pd.DataFrame | None = None,
                n_user_buckets: int = 1) -> RewardData:
    """Every impression of a time-ordered log, with its user's context strictly before it."""
    # the RM reads no lifelong sequence, and only the most recent part of the others
    lean = dataclasses.replace(cfg.data, max_long_seq_len=1,
                               max_seq_len=cfg.reward.max_seq_len,
                               max_pos_seq_len=cfg.reward.max_pos_seq_len)
    events = events.reset_index(drop=True)
    reqs = requests_from_events(events, item_index, lean, history=history,
                                n_user_buckets=n_user_buckets, positive_only=False)
    assert reqs.target_rows is not None  # nosec B101 # type narrowing
    labels = event_labels(events.iloc[reqs.target_rows], shaper)
    target_req = np.repeat(np.arange(len(reqs)), np.diff(reqs.target_offsets))
    return RewardData(reqs=reqs, labels=labels, target_req=target_req,
                      target_time=reqs.time_ms[target_req])


def impression_batch(data: RewardData, idx: np.ndarray,
                     ) -> tuple[Batch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Impressions idx -> (contexts of their unique requests, items, request index, labels)."""
    req, inverse = np.unique(data.target_req[idx], return_inverse=True)
    r = data.reqs
    ctx = Batch(user=torch.from_numpy(r.user[req]), short=torch.from_numpy(r.short[req]),
                pos=torch.from_numpy(r.pos[req]), long=torch.from_numpy(r.long[req]))
    return (ctx, torch.from_numpy(r.targets[idx]), torch.from_numpy(inverse.reshape(-1)),
            torch.from_numpy(data.labels[idx]))

