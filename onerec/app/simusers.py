"""Simulated KuaiRand users: how a real user responds to a video they are shown.

The demo's A/B compares two served model versions by the engagement their slates earn. Live
users are not available, so this module stands in for them: a behaviour model fitted on the
logged KuaiRand-Pure impressions, giving P(click | user, video) and P(long view | user, video),
from which `served_feedback` draws each simulated request's clicks and long views.

Why a separate model, not the pipeline's P-Score reward model: the canary was aligned (ECPO) to
that reward model, so judging it by the same model would be circular (it would win by
construction, whatever real users do). The simulator is the "world": a different model family,
fitted on every logged day, never seen by the pipeline's models, and checked against held-out
days. It is a model of logged behaviour, so it inherits the log's exposure bias (KuaiRand-Pure's
standard traffic shows what Kuaishou's recommender chose).

Model, per user u and video v (logits; one set of parameters per target):

    click:             b + x_v . w + b_u + b_v
    long view | click: the same form, fitted on clicked impressions only

and P(long view) = P(click) P(long view | click): in KuaiRand a long view without a click is
rare (250 of 218,876 impressions). x_v are standardised video features (duration, the video's
platform-wide play, completion, long-play and like rates, its type), so a video never logged
still gets a feature-based score; an unknown user gets the population's terms (zero biases).
Biases have Gaussian priors (L2 summed over parameters, divided by the rows), fitted by
full-batch Adam from zeros: deterministic, about a second on a CPU.

No user-video interaction term: low-rank factors <p_u, q_v> (rank 4-8, over videos or over
tags, L2 0.5-20) either overfitted (held-out click log-loss 0.65-1.35, against 0.619 without)
or shrank to zero (no change) on the held-out days: with 8.7 impressions a user the sample
cannot estimate a user's taste beyond their overall rate. So this world rewards a slate for
videos that KuaiRand users click and watch more than others (given who is watching), not for
matching one user's taste; a model that personalises better than that gets no credit here.

`holdout` fits on all but the last days and reports log-loss and AUC on those days against the
global rate and a per-user rate (beta-binomial shrinkage, `onerec.ab.UserBehaviour`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onerec.data.schema import DAY_MS
from onerec.evaluate import auc

TARGETS = ("click", "long_view")


# -- video features -------------------------------------------------------------------------------
def video_features(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(video ids, standardised features (V, F), feature names) from `video_features.parquet`
    (`kuairand.read_items`): log duration and the platform-wide rates, NaN -> the mean (0)."""
    it = items.drop_duplicates("video_id").reset_index(drop=True)
    show = it["show_cnt"].astype(float).clip(lower=1.0)
    play = it["play_cnt"].astype(float).clip(lower=1.0)
    cols = {
        "log_duration": np.log1p(it["duration_ms"].astype(float) / 1000.0),
        "play_rate": it["play_cnt"].astype(float) / show,
        "complete_rate": it["complete_play_cnt"].astype(float) / play,
        "long_play_rate": it["long_time_play_cnt"].astype(float) / play,
        "short_play_rate": it["short_time_play_cnt"].astype(float) / play,
        "like_rate": it["like_cnt"].astype(float) / play,
        "play_progress": it["play_progress"].astype(float),
        "log_show": np.log1p(it["show_cnt"].astype(float)),
    }
    kinds = it["video_type"].astype(str)
    for kind in sorted(kinds.unique()):
        cols[f"type_{kind}"] = (kinds == kind).astype(float)
    x = pd.DataFrame(cols).to_numpy(float)
    x[~np.isfinite(x)] = np.nan
    mean, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    x = (x - mean) / np.where(sd > 0, sd, 1.0)
    return it["video_id"].to_numpy(np.int64), np.nan_to_num(x), list(cols)


def _targets(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    click = events["is_click"].fillna(0).to_numpy().astype(np.float32)
    long = events["long_view"].fillna(0).to_numpy().astype(np.float32)
    return click, long


def _lookup(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of each id in the sorted `table`, or len(table) (the zero row) when absent."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(table, ids).clip(0, max(len(table) - 1, 0))
    found = (table[pos] == ids) if len(table) else np.zeros(ids.shape, bool)
    return np.where(found, pos, len(table))


# -- the model ------------------------------------------------------------------------------------
@dataclass
class _Head:
    """One logistic head's parameters; the last row of each bias table is the zero row."""

    bias: float
    w: np.ndarray  # (F,) video-feature weights
    user_bias: np.ndarray  # (U + 1,)
    video_bias: np.ndarray  # (V + 1,)

    def logit(self, u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.bias + np.take(x @ self.w + self.video_bias, v) + np.take(self.user_bias, u)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _fit_head(u: np.ndarray, v: np.ndarray, y: np.ndarray, x: np.ndarray, n_users: int,
              n_videos: int, *, l2_bias: float, l2_w: float, steps: int, lr: float) -> _Head:
    """Full-batch Adam on the penalised mean log-loss, gradients in closed form (bincounts:
    several times faster on a CPU than autograd's scatter for this shape). Deterministic: the
    parameters start at zero and the global rate."""
    n = float(len(y))
    x = x[:n_videos]
    rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    params = {"b": np.array([np.log(rate / (1 - rate))]), "w": np.zeros(x.shape[1]),
              "bu": np.zeros(n_users), "bv": np.zeros(n_videos)}
    l2 = {"b": 0.0, "w": l2_w, "bu": l2_bias, "bv": l2_bias}
    m = {k: np.zeros_like(a) for k, a in params.items()}
    s = {k: np.zeros_like(a) for k, a in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        p = params
        logit = p["b"][0] + np.take(x @ p["w"] + p["bv"], v) + np.take(p["bu"], u)
        g = (_sigmoid(logit) - y) / n  # d mean log-loss / d logit
        g_v = np.bincount(v, g, n_videos)
        grads = {"b": np.array([g.sum()]), "w": x.T @ g_v, "bu": np.bincount(u, g, n_users),
                 "bv": g_v}
        for k, a in params.items():
            grad = grads[k] + 2 * l2[k] * a / n
            m[k] = beta1 * m[k] + (1 - beta1) * grad
            s[k] = beta2 * s[k] + (1 - beta2) * grad * grad
            a -= lr * (m[k] / (1 - beta1**t)) / (np.sqrt(s[k] / (1 - beta2**t)) + eps)
    return _Head(float(params["b"][0]), params["w"], np.append(params["bu"], 0.0),
                 np.append(params["bv"], 0.0))


@dataclass
class BehaviourModel:
    """P(click | user, video) and P(long view | user, video) of KuaiRand users."""

    user_ids: np.ndarray  # (U,) sorted int64: users seen in the fitting events
    video_ids: np.ndarray  # (V,) sorted int64: catalogue and logged videos
    features: np.ndarray  # (V + 1, F) standardised video features; last row zeros
    click: _Head
    long_given_click: _Head
    activity: np.ndarray  # (U,) share of impressions: how often each user comes back

    @classmethod
    def fit(cls, events: pd.DataFrame, items: pd.DataFrame, *, l2_bias: float = 2.0,
            l2_w: float = 1.0, steps: int = 150, lr: float = 0.1) -> BehaviourModel:
        """Fit both heads on logged impressions (user_id, video_id, is_click, long_view) and
        the catalogue's video features."""
        if events.empty:
            raise ValueError("no events to fit user behaviour on")
        item_ids, x, _ = video_features(items)
        users = np.unique(events["user_id"].to_numpy(np.int64))
        videos = np.unique(np.concatenate([item_ids, events["video_id"].to_numpy(np.int64)]))
        feats = np.zeros((len(videos) + 1, x.shape[1]))
        feats[_lookup(item_ids, videos)] = x
        u = _lookup(events["user_id"].to_numpy(np.int64), users)
        v = _lookup(events["video_id"].to_numpy(np.int64), videos)
        click, long = _targets(events)
        kw: dict[str, Any] = {"l2_bias": l2_bias, "l2_w": l2_w, "steps": steps, "lr": lr}
        head_c = _fit_head(u, v, click, feats, len(users), len(videos), **kw)
        c = click > 0
        head_l = _fit_head(u[c], v[c], long[c], feats, len(users), len(videos), **kw)
        counts = np.bincount(u, minlength=len(users)).astype(float)
        return cls(users, videos, feats, head_c, head_l, counts / counts.sum())

    @classmethod
    def from_kuairand(cls, data_dir: str | Path, **fit_kw: Any) -> BehaviourModel:
        from onerec.data import kuairand

        return cls.fit(kuairand.read_events(data_dir), kuairand.read_items(data_dir), **fit_kw)

    def predict(self, user_ids: np.ndarray | Sequence[int],
                video_ids: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(P(click), P(long view)) for matching (broadcastable) arrays of user and video ids,
        e.g. users (N, 1) against slates (N, K). Unknown users and videos use the zero rows."""
        u = _lookup(np.asarray(user_ids), self.user_ids)
        v = _lookup(np.asarray(video_ids), self.video_ids)
        u, v = np.broadcast_arrays(u, v)
        p_click = _sigmoid(self.click.logit(u, v, self.features))
        p_long = p_click * _sigmoid(self.long_given_click.logit(u, v, self.features))
        return p_click, p_long

    def top_videos(self, user_ids: np.ndarray, k: int, candidates: np.ndarray | None = None,
                   ) -> np.ndarray:
        """(N, k) each user's k candidates with the highest P(click) + P(long view): the slates
        an oracle that knew this simulator would serve (tests use it as a clearly better arm)."""
        cand = self.video_ids if candidates is None else np.asarray(candidates, np.int64)
        users = np.asarray(user_ids, np.int64)[:, None]
        out = np.empty((len(users), k), np.int64)
        for lo in range(0, len(users), 256):
            pc, pl = self.predict(users[lo:lo + 256], cand[None, :])
            best = np.argsort(-(pc + pl), axis=1, kind="stable")[:, :k]
            out[lo:lo + 256] = cand[best]
        return out

    def draw_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` request users, each drawn by activity (a user with twice the impressions comes
        back twice as often)."""
        return self.user_ids[rng.choice(len(self.user_ids), size=n, p=self.activity)]


# -- evaluation -----------------------------------------------------------------------------------
def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, float)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def holdout(events: pd.DataFrame, items: pd.DataFrame, days: int = 2,
            **fit_kw: Any) -> dict[str, Any]:
    """Fit on all but the last `days` days, score those days. -> per target, per model
    (global rate, per-user rate, behaviour model): log-loss and AUC; plus the split sizes."""
    from onerec.ab import UserBehaviour

    cut = int(events["time_ms"].max()) // DAY_MS * DAY_MS - (days - 1) * DAY_MS
    train, test = events[events["time_ms"] < cut], events[events["time_ms"] >= cut]
    if train.empty or test.empty:
        raise ValueError(f"holdout: {len(train)} train / {len(test)} test rows after the cut")
    model = BehaviourModel.fit(train, items, **fit_kw)
    users = UserBehaviour.from_events(train)
    idx = _lookup(test["user_id"].to_numpy(np.int64), users.user_ids)
    click, long = _targets(train)
    y_click, y_long = _targets(test)
    pc, pl = model.predict(test["user_id"].to_numpy(np.int64), test["video_id"].to_numpy(np.int64))
    preds = {
        "click": {"global": np.full(len(test), click.mean()),
                  "user": np.append(users.click, click.mean())[idx], "model": pc},
        "long_view": {"global": np.full(len(test), long.mean()),
                      "user": np.append(users.long_view, long.mean())[idx], "model": pl},
    }
    metrics = {t: {name: {"log_loss": round(log_loss(y, p), 4), "auc": round(auc(p, y), 4)}
                   for name, p in preds[t].items()}
               for t, y in (("click", y_click), ("long_view", y_long))}
    return {"train_rows": len(train), "test_rows": len(test), "test_days": days,
            "test_from_ms": cut, "known_users": float(np.isin(
                test["user_id"].to_numpy(np.int64), model.user_ids).mean()),
            "metrics": metrics}


# -- feedback on served slates --------------------------------------------------------------------
def served_feedback(model: BehaviourModel, request_users: np.ndarray, arms: np.ndarray,
                    slates: Mapping[int, Sequence[int]], *, seed: int = 0) -> pd.DataFrame:
    """One row per request: the user (request_users[i], in arm arms[i]) is shown their slate
    (`slates[user]`, what their arm's server answered); each video is clicked with the model's
    P(click) and, if clicked, long-viewed with P(long view | click). Columns: user_id, variant,
    clicks, long_views, impressions, reward ((clicks + long views) / impressions, the metric
    `onerec.ab.analyze` compares), p_click (the slate's mean predicted P(click))."""
    rng = np.random.default_rng(seed)
    users = np.asarray(request_users, np.int64)
    uniq, inverse = np.unique(users, return_inverse=True)
    width = max((len(slates[int(u)]) for u in uniq), default=0)
    grid = np.full((len(uniq), max(width, 1)), -1, np.int64)
    for i, u in enumerate(uniq):
        s = list(slates[int(u)])
        grid[i, :len(s)] = s
    shown = grid >= 0
    pc, pl = model.predict(uniq[:, None], grid)
    pc, pl = np.where(shown, pc, 0.0), np.where(shown, pl, 0.0)
    p_long_click = np.divide(pl, pc, out=np.zeros_like(pl), where=pc > 0)
    n_shown = shown.sum(axis=1)
    slate_p_click = pc.sum(axis=1) / np.maximum(n_shown, 1)
    r_pc, r_plc = pc[inverse], p_long_click[inverse]
    clicked = rng.random(r_pc.shape) < r_pc
    longs = clicked & (rng.random(r_pc.shape) < r_plc)
    impressions = n_shown[inverse]
    clicks, long_views = clicked.sum(axis=1), longs.sum(axis=1)
    return pd.DataFrame({"user_id": users, "variant": np.asarray(arms, dtype=object),
                         "clicks": clicks, "long_views": long_views, "impressions": impressions,
                         "reward": (clicks + long_views) / np.maximum(impressions, 1),
                         "p_click": slate_p_click[inverse]})
