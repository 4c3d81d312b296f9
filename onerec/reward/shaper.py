"""What the reward model learns to predict: six tasks, and the label each impression gives them.

Following OneRec (arXiv 2506.13695, section 4.1, "Preference Score"), one network predicts
every feedback signal the logs carry for a (user, video) pair: click, long view, like, follow,
comment, and a watch-time target (`TASKS`). Five are the logs' 0/1 flags; "engaged" (long view,
like, follow or comment, `ENGAGED_TASKS`) is the label the personalised fusion learns.

Watch time is shaped as in OneRec-V2 (arXiv 2508.20900, duration-aware reward shaping): the
raw watch time of a long video is not comparable with a short one's, so the target is the
percentile of the play time among impressions of videos in the same duration bucket
(`DurationShaper`, fitted on training days only, saved with the model so serving and
evaluation shape watch time the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TASKS: tuple[str, ...] = ("click", "long_view", "like", "follow", "comment", "watch")
LABEL_COLUMNS: dict[str, str] = {"click": "is_click", "long_view": "long_view",
                                 "like": "is_like", "follow": "is_follow",
                                 "comment": "is_comment"}
ENGAGED_TASKS: tuple[str, ...] = ("long_view", "like", "follow", "comment")  # the fusion's label


@dataclass
class DurationShaper:
    """Watch time -> its percentile among impressions of similarly long videos.

    edges: (n_buckets - 1,) duration quantiles that split videos into buckets;
    quantiles: (n_buckets, Q) play-time quantiles per bucket (sorted), the reference population.
    """

    edges: np.ndarray
    quantiles: np.ndarray

    @classmethod
    def fit(cls, duration_ms: np.ndarray, play_time_ms: np.ndarray, n_buckets: int,
            n_quantiles: int = 201) -> DurationShaper:
        duration = np.asarray(duration_ms, dtype=np.float64)
        play = np.asarray(play_time_ms, dtype=np.float64)
        if len(duration) == 0:
            raise ValueError("DurationShaper.fit: no impressions")
        edges = np.unique(np.quantile(duration, np.linspace(0, 1, n_buckets + 1)[1:-1]))
        bucket = np.searchsorted(edges, duration, side="right")
        grid = np.linspace(0, 1, n_quantiles)
        qs = np.stack([np.quantile(play[bucket == b] if (bucket == b).any() else play, grid)
                       for b in range(len(edges) + 1)])
        return cls(edges=edges, quantiles=qs)

    def __call__(self, duration_ms: np.ndarray, play_time_ms: np.ndarray) -> np.ndarray:
        """Percentile in [0, 1] of each play time within its duration bucket (ties: mid-rank)."""
        duration = np.asarray(duration_ms, dtype=np.float64)
        play = np.asarray(play_time_ms, dtype=np.float64)
        bucket = np.searchsorted(self.edges, duration, side="right")
        out = np.empty(len(play), dtype=np.float32)
        q = self.quantiles.shape[1]
        for b in np.unique(bucket):
            sel = bucket == b
            ref = self.quantiles[b]
            lo = np.searchsorted(ref, play[sel], side="left")
            hi = np.searchsorted(ref, play[sel], side="right")
            out[sel] = (lo + hi) / (2.0 * q)
        return out

    def state(self) -> dict[str, list]:
        return {"edges": self.edges.tolist(), "quantiles": self.quantiles.tolist()}

    @classmethod
    def from_state(cls, d: dict[str, list]) -> DurationShaper:
        return cls(edges=np.asarray(d["edges"], dtype=np.float64),
                   quantiles=np.asarray(d["quantiles"], dtype=np.float64))


def event_labels(events: pd.DataFrame, shaper: DurationShaper) -> np.ndarray:
    """(E, 6) float32 labels in TASKS order: five 0/1 flags and the shaped watch percentile."""
    flags = [events[LABEL_COLUMNS[t]].to_numpy().astype(np.float32) for t in TASKS[:-1]]
    watch = shaper(events["duration_ms"].to_numpy(), events["play_time_ms"].to_numpy())
    return np.stack([*flags, watch], axis=1)
