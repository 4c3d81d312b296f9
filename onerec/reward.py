"""P-Score: the reward model that tells ECPO (and RM selection) what a user would prefer.

Following OneRec (arXiv 2506.13695, section 4.1, "Preference Score"):
- One network predicts every feedback signal the logs carry for a (user, video) pair: click,
  long view, like, follow, comment, and a watch-time target. Shared parts, one head per task,
  so sparse tasks (follow: 0.13% of impressions) borrow statistics from dense ones.
- A *personalised fusion* turns the task probabilities into one preference score: weights
  w(u) = softmax(MLP(user representation)) over the six tasks, P-Score = sum_k w_k(u) p_k. The
  fusion is trained to predict "engaged" (long view, like, follow or comment) with the task
  probabilities detached, so the heads stay calibrated per task and only the weights learn
  which signal predicts engagement for this kind of user. A convex combination of
  probabilities keeps the P-Score in [0, 1] and comparable across users.
- The user side reuses OneRec's context encoding idea, smaller: the short-term and
  positive-feedback sequences (item id embedding + the sum of its semantic-ID code
  embeddings), a segment and a position embedding, a transformer encoder; the candidate attends
  to the encoded history (target attention), so one user encoding scores many candidates.
- Watch time is shaped as in OneRec-V2 (arXiv 2508.20900, duration-aware reward shaping): the
  raw watch time of a long video is not comparable with a short one's, so the target is the
  percentile of the play time among impressions of videos in the same duration bucket
  (`DurationShaper`, fitted on training days only).

Trained on impression logs (every impression, not only positives) with the same request
contexts as pretraining (strictly earlier behaviour); evaluated on the held-out days with
per-task AUC and calibration (ECE, mean predicted vs observed). Saved atomically as a folder
(weights, Config, duration shaper, codebook fingerprint); a reward model made with another
codebook is refused, since item indices would point at other videos.

`rm_select` is the inference-time use ("OneRec with RM selection"): generate N candidates,
re-score them with the P-Score, keep the best k.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from onerec.config import Config, RewardConfig
from onerec.evaluate import auc
from onerec.io import atomic_dir, load_torch_state
from onerec.items import ItemSpace
from onerec.model import Attention, Batch
from onerec.stream import Requests, requests_from_events

TASKS: tuple[str, ...] = ("click", "long_view", "like", "follow", "comment", "watch")
LABEL_COLUMNS: dict[str, str] = {"click": "is_click", "long_view": "long_view",
                                 "like": "is_like", "follow": "is_follow",
                                 "comment": "is_comment"}
ENGAGED_TASKS: tuple[str, ...] = ("long_view", "like", "follow", "comment")  # the fusion's label
RM_NAME = "reward_model"


class RewardModelError(ValueError):
    """A reward-model folder is missing, corrupt, or made with another codebook."""


# -- duration-aware watch-time target (OneRec-V2) ------------------------------------------------
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


# -- the model -----------------------------------------------------------------------------------
class RewardModel(nn.Module):
    """Multi-task P-Score model over (user context, candidate video).

    item_codes: (n_items + 1, L) semantic ID of each item index (row 0: padding), the same item
    space as the generator; vocab_sizes: K_l per level.
    """

    def __init__(self, cfg: RewardConfig, *, item_codes: torch.Tensor, vocab_sizes: list[int],
                 n_user_buckets: int = 1, max_seq_len: int = 50, max_pos_len: int = 50) -> None:
        super().__init__()
        if item_codes.dim() != 2 or item_codes.shape[1] != len(vocab_sizes):
            raise ValueError(f"item_codes must be (n_items + 1, L={len(vocab_sizes)}), "
                             f"got {tuple(item_codes.shape)}")
        self.cfg = cfg
        d = cfg.d_model
        self.vocab_sizes = list(vocab_sizes)
        self.n_user_buckets = max(1, n_user_buckets)
        self.max_seq_len, self.max_pos_len = max_seq_len, max_pos_len
        self.register_buffer("item_codes", item_codes.long().clone())
        offsets = torch.tensor([0, *torch.tensor(vocab_sizes).cumsum(0).tolist()[:-1]])
        self.register_buffer("code_offsets", offsets)
        self.item_emb = nn.Embedding(item_codes.shape[0], d, padding_idx=0)
        self.code_emb = nn.Embedding(int(sum(vocab_sizes)), d)
        self.user_emb = nn.Embedding(self.n_user_buckets, d)
        self.segment_emb = nn.Embedding(3, d)  # user, short, positive
        self.short_pos = nn.Embedding(max_seq_len, d)
        self.pos_pos = nn.Embedding(max_pos_len, d)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, dim_feedforward=2 * d,
                                           dropout=cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(d)
        self.target_attn = Attention(d_model=d, n_heads=cfg.n_heads, dropout=cfg.dropout)
        self.tower = nn.Sequential(nn.Linear(4 * d, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                   nn.Linear(cfg.hidden, cfg.hidden), nn.GELU())
        self.heads = nn.Linear(cfg.hidden, len(TASKS))
        self.fusion = nn.Sequential(nn.Linear(d, cfg.hidden), nn.GELU(),
                                    nn.Linear(cfg.hidden, len(TASKS)))
        # not weights: the item-index -> video-id map and the codebook it belongs to
        self.item_ids: np.ndarray = np.zeros(0, dtype=np.int64)
        self.codebook_fingerprint = ""

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(..., N) item indices -> (..., N, d): item id + sum of semantic-ID code embeddings."""
        codes = self.item_codes[items] + self.code_offsets
        e = self.item_emb(items) + self.code_emb(codes).sum(-2)
        return e * (items > 0).unsqueeze(-1)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> memory (B, M, d), mask (B, M) True = real token, user representation (B, d)."""
        b = batch.short.shape[0]
        short = batch.short[:, -self.max_seq_len:]
        pos = batch.pos[:, -self.max_pos_len:]
        user = (self.user_emb(batch.user % self.n_user_buckets)
                + self.segment_emb.weight[0]).unsqueeze(1)
        s, p = short.shape[1], pos.shape[1]
        xs = self.embed_items(short) + self.short_pos.weight[-s:] + self.segment_emb.weight[1]
        xp = self.embed_items(pos) + self.pos_pos.weight[-p:] + self.segment_emb.weight[2]
        x = torch.cat([user, xs, xp], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), short > 0,
                          pos > 0], 1)
        h = self.enc_norm(self.encoder(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).float()
        urep = (h * m).sum(1) / m.sum(1)
        return h, mask, urep

    def score(self, memory: torch.Tensor, mask: torch.Tensor, urep: torch.Tensor,
              items: torch.Tensor, req: torch.Tensor) -> dict[str, torch.Tensor]:
        """Candidates (T,) of requests req (T,) -> task logits (T, 6), probabilities, fusion
        weights (T, 6) and the P-Score (T,)."""
        c = self.embed_items(items)  # (T, d)
        k, v = self.target_attn.project_kv(memory)
        interest = self.target_attn.attend(c.unsqueeze(1), k[req], v[req],
                                           mask[req][:, None, None, :]).squeeze(1)
        u = urep[req]
        logits = self.heads(self.tower(torch.cat([u, c, interest, u * c], -1)))
        probs = torch.sigmoid(logits)
        weights = torch.softmax(self.fusion(urep), -1)[req]
        # the fusion learns weights only: its loss does not reach the task heads
        pscore = (weights * probs.detach()).sum(-1)
        return {"logits": logits, "probs": probs, "weights": weights, "pscore": pscore}

    def forward(self, batch: Batch, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score (B, C) candidate item indices for B contexts -> outputs shaped (B, C, ...)."""
        memory, mask, urep = self.encode(batch)
        b, c = items.shape
        req = torch.arange(b, device=items.device).repeat_interleave(c)
        out = self.score(memory, mask, urep, items.reshape(-1), req)
        return {k: v.reshape(b, c, *v.shape[1:]) for k, v in out.items()}

    @torch.no_grad()
    def pscore(self, batch: Batch, items: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """(B, C) item indices -> (B, C) P-Score in eval mode (index 0 scores 0)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for s in range(0, items.shape[0], chunk):
            sub = Batch(user=batch.user[s:s + chunk], short=batch.short[s:s + chunk],
                        pos=batch.pos[s:s + chunk], long=batch.long[s:s + chunk]).to(dev)
            it = items[s:s + chunk].to(dev)
            out.append(self(sub, it)["pscore"].masked_fill(it == 0, 0.0).cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(items.shape)


def loss_fn(out: dict[str, torch.Tensor], labels: torch.Tensor, fusion_weight: float,
            ) -> dict[str, torch.Tensor]:
    """Mean per-task binary cross-entropy (the watch task with its soft percentile label) plus
    the fused P-Score's cross-entropy against "engaged" (long view, like, follow or comment)."""
    per_task = F.binary_cross_entropy_with_logits(out["logits"], labels,
                                                  reduction="none").mean(0)
    engaged = labels[:, [TASKS.index(t) for t in ENGAGED_TASKS]].amax(-1)
    fused = F.binary_cross_entropy(out["pscore"].clamp(1e-6, 1 - 1e-6), engaged)
    loss = per_task.mean() + fusion_weight * fused
    return {"loss": loss, "task_losses": per_task.detach(), "fusion_loss": fused.detach()}


# -- data ----------------------------------------------------------------------------------------
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


def _batch(data: RewardData, idx: np.ndarray) -> tuple[Batch, torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
    """Impressions idx -> (contexts of their unique requests, items, request index, labels)."""
    req, inverse = np.unique(data.target_req[idx], return_inverse=True)
    r = data.reqs
    ctx = Batch(user=torch.from_numpy(r.user[req]), short=torch.from_numpy(r.short[req]),
                pos=torch.from_numpy(r.pos[req]), long=torch.from_numpy(r.long[req]))
    return (ctx, torch.from_numpy(r.targets[idx]), torch.from_numpy(inverse.reshape(-1)),
            torch.from_numpy(data.labels[idx]))


# -- training and evaluation ---------------------------------------------------------------------
@dataclass
class RewardTrainResult:
    steps: int
    final_loss: float
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_reward_model(cfg: Config, item_codes: torch.Tensor, vocab_sizes: list[int],
                       n_user_buckets: int = 1) -> RewardModel:
    torch.manual_seed(cfg.reward.seed)
    return RewardModel(cfg.reward, item_codes=item_codes, vocab_sizes=vocab_sizes,
                       n_user_buckets=n_user_buckets, max_seq_len=cfg.reward.max_seq_len,
                       max_pos_len=cfg.reward.max_pos_seq_len)


def train_reward_model(cfg: Config, data: RewardData, train_idx: np.ndarray,
                       model: RewardModel, *, time_budget_s: float | None = None,
                       log: Callable[[dict[str, Any]], None] | None = None,
                       ) -> RewardTrainResult:
    """AdamW on shuffled impressions (epochs over train_idx), warmup then constant LR."""
    rc = cfg.reward
    if len(train_idx) == 0:
        raise ValueError("no training impressions for the reward model")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=rc.weight_decay)
    rng = np.random.default_rng(rc.seed)
    order, pos = rng.permutation(train_idx), 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    loss_val = float("nan")
    model.train()
    step = 0
    while step < rc.steps:
        if pos >= len(order):
            order, pos = rng.permutation(train_idx), 0
        idx = order[pos:pos + rc.batch_size]
        pos += len(idx)
        ctx, items, req, labels = _batch(data, idx)
        for g in opt.param_groups:
            g["lr"] = rc.lr * min(1.0, (step + 1) / max(1, rc.warmup_steps))
        memory, mask, urep = model.encode(ctx.to(device))
        out = model.score(memory, mask, urep, items.to(device), req.to(device))
        losses = loss_fn(out, labels.to(device), rc.fusion_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
        opt.step()
        step += 1
        loss_val = float(losses["loss"].detach())
        if step % rc.log_every == 0 or step == rc.steps:
            rec = {"step": step, "loss": loss_val, "fusion_loss": float(losses["fusion_loss"]),
                   "grad_norm": float(gn), "wall_s": time.perf_counter() - t0,
                   **{f"loss_{t}": float(v) for t, v in zip(TASKS, losses["task_losses"],
                                                             strict=True)}}
            history.append(rec)
            if log is not None:
                log(rec)
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    model.eval()
    return RewardTrainResult(steps=step, final_loss=loss_val, wall_s=time.perf_counter() - t0,
                             history=history)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Expected calibration error: |mean label - mean prediction| per equal-width bin, weighted
    by the bin's share of predictions."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(labels[sel].mean() - probs[sel].mean())
    return float(total)


@torch.no_grad()
def predict(model: RewardModel, data: RewardData, idx: np.ndarray,
            batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Task probabilities (n, 6) and P-Scores (n,) of impressions idx, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    probs, pscore = [], []
    for s in range(0, len(idx), batch_size):
        ctx, items, req, _ = _batch(data, idx[s:s + batch_size])
        memory, mask, urep = model.encode(ctx.to(device))
        out = model.score(memory, mask, urep, items.to(device), req.to(device))
        probs.append(out["probs"].cpu().numpy())
        pscore.append(out["pscore"].cpu().numpy())
    if not probs:
        return {"probs": np.zeros((0, len(TASKS))), "pscore": np.zeros(0)}
    return {"probs": np.concatenate(probs), "pscore": np.concatenate(pscore)}


def evaluate_reward_model(model: RewardModel, data: RewardData, idx: np.ndarray,
                          bins: int = 10) -> dict[str, dict[str, float]]:
    """Per task: AUC, ECE, mean predicted vs observed, positives; and the fused P-Score's AUC
    against "engaged". The watch task's AUC and ECE use its percentile label > 0.5."""
    return reward_metrics(predict(model, data, idx), data.labels[idx], bins)


def _engaged(labels: np.ndarray) -> np.ndarray:
    return labels[:, [TASKS.index(t) for t in ENGAGED_TASKS]].max(-1)


def reward_metrics(pred: dict[str, np.ndarray], labels: np.ndarray,
                   bins: int = 10) -> dict[str, dict[str, float]]:
    """`evaluate_reward_model` on predictions already made (`predict`) and their labels."""
    out: dict[str, dict[str, float]] = {}
    for k, task in enumerate(TASKS):
        y, p = labels[:, k], pred["probs"][:, k]
        y_bin = (y > 0.5).astype(np.float64)
        out[task] = {"auc": auc(p, y_bin), "ece": ece(p, y, bins),
                     "mean_pred": float(p.mean()) if len(p) else float("nan"),
                     "mean_obs": float(y.mean()) if len(y) else float("nan"),
                     "positives": float(y_bin.sum())}
    engaged = _engaged(labels)
    out["pscore"] = {"auc": auc(pred["pscore"], engaged), "ece": ece(pred["pscore"], engaged, bins),
                     "mean_pred": float(pred["pscore"].mean()) if len(engaged) else float("nan"),
                     "mean_obs": float(engaged.mean()) if len(engaged) else float("nan"),
                     "positives": float(engaged.sum())}
    return out


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int
                     ) -> dict[str, list[float | None]]:
    """Per equal-width bin of the predictions (the bins `ece` weighs): mean predicted, mean
    observed and count; an empty bin has count 0 and no means. A reliability diagram's data."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    out: dict[str, list[float | None]] = {"pred": [], "obs": [], "count": []}
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out["pred"].append(float(probs[sel].mean()) if n else None)
        out["obs"].append(float(labels[sel].mean()) if n else None)
        out["count"].append(n)
    return out


def calibration_curves(pred: dict[str, np.ndarray], labels: np.ndarray,
                       bins: int = 10) -> dict[str, dict[str, list[float | None]]]:
    """`calibration_bins` of every task and of the P-Score (against "engaged")."""
    out = {task: calibration_bins(pred["probs"][:, k], labels[:, k], bins)
           for k, task in enumerate(TASKS)}
    out["pscore"] = calibration_bins(pred["pscore"], _engaged(labels), bins)
    return out


def fit_p_score(cfg: Config, events: pd.DataFrame, space: ItemSpace, cut_ms: int,
                out: str | Path, *,
                history: pd.DataFrame | None = None, n_user_buckets: int = 1,
                time_budget_s: float | None = None,
                log: Callable[[dict[str, Any]], None] | None = None,
                ) -> tuple[RewardModel, dict[str, Any]]:
    """The one recipe (the pipeline's reward stage and `onerec align` both call it): fit the
    duration shaper and train the P-Score model on the impressions before `cut_ms`, evaluate it
    (per-task AUC and ECE, calibration curves at `reward.calibration_bins`) on those after, and
    save it to `out`. Returns the model and its summary."""
    before = events[events["time_ms"] < cut_ms]
    shaper = DurationShaper.fit(before["duration_ms"].to_numpy(),
                                before["play_time_ms"].to_numpy(), cfg.reward.duration_buckets)
    data = reward_data(events, space.index, cfg, shaper, history=history,
                       n_user_buckets=n_user_buckets)
    train_idx, test_idx = data.split(cut_ms)
    model = build_reward_model(cfg, space.codes, space.vocab_sizes, n_user_buckets)
    model.item_ids, model.codebook_fingerprint = space.item_ids, space.fingerprint
    res = train_reward_model(cfg, data, train_idx, model, time_budget_s=time_budget_s, log=log)
    metrics: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    if len(test_idx):  # one pass over the held-out impressions for both
        pred, labels = predict(model, data, test_idx), data.labels[test_idx]
        metrics = reward_metrics(pred, labels, cfg.reward.calibration_bins)
        calibration = calibration_curves(pred, labels, cfg.reward.calibration_bins)
    save_reward_model(out, model, cfg, shaper, metrics)
    return model, {"steps": res.steps, "final_loss": res.final_loss,
                   "train_s": round(res.wall_s, 3), "n_train_impressions": len(train_idx),
                   "n_heldout_impressions": len(test_idx), "metrics": metrics,
                   "calibration": calibration}


# -- save / load ---------------------------------------------------------------------------------
def save_reward_model(path: str | Path, model: RewardModel, cfg: Config,
                      shaper: DurationShaper | None = None,
                      metrics: dict[str, Any] | None = None) -> Path:
    """Write the folder atomically: state.pt, config.yaml, meta.json."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        torch.save({"model": model.state_dict(), "vocab_sizes": model.vocab_sizes,
                    "n_user_buckets": model.n_user_buckets, "item_ids": model.item_ids,
                    "shaper": shaper.state() if shaper is not None else None},
                   tmp / "state.pt")
        cfg.save(tmp / "config.yaml")
        meta = {"codebook_fingerprint": model.codebook_fingerprint,
                "config_fingerprint": cfg.fingerprint(), "metrics": metrics or {}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_nan_safe))
    return path


def _nan_safe(v: Any) -> Any:
    return float(v) if isinstance(v, (np.floating, float)) and not math.isnan(v) else None


def load_reward_model(path: str | Path, codebook_fingerprint: str | None = None,
                      ) -> tuple[RewardModel, Config, DurationShaper | None]:
    """Read a reward-model folder; refuse one made with another codebook."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        state = load_torch_state(path / "state.pt")
        cfg = Config.from_file(path / "config.yaml")
    except FileNotFoundError as e:
        raise RewardModelError(f"reward model {path} is incomplete: missing {e.filename}") from None
    except Exception as e:
        raise RewardModelError(f"reward model {path} is unreadable "
                               f"({type(e).__name__}: {e})") from None
    if codebook_fingerprint is not None and meta["codebook_fingerprint"] != codebook_fingerprint:
        raise RewardModelError(
            f"reward model {path} was trained with codebook {meta['codebook_fingerprint']}, "
            f"refusing codebook {codebook_fingerprint}")
    codes = state["model"]["item_codes"]
    model = RewardModel(cfg.reward, item_codes=codes, vocab_sizes=state["vocab_sizes"],
                        n_user_buckets=state["n_user_buckets"],
                        max_seq_len=cfg.reward.max_seq_len, max_pos_len=cfg.reward.max_pos_seq_len)
    model.load_state_dict(state["model"])
    model.item_ids = np.asarray(state["item_ids"], dtype=np.int64)
    model.codebook_fingerprint = meta["codebook_fingerprint"]
    model.eval()
    shaper = DurationShaper.from_state(state["shaper"]) if state.get("shaper") else None
    return model, cfg, shaper


# -- inference-time selection ---------------------------------------------------------------------
@torch.no_grad()
def rm_select(reward_model: RewardModel, contexts: Batch, candidate_items: list[list[int]],
              k: int) -> list[list[int]]:
    """OneRec with RM selection: re-rank each user's generated candidates by P-Score, keep k.

    contexts: the users' Batch in the codebook's item-index space (as the generator got it);
    candidate_items: per user, the generated video ids (beam order, best first). Duplicates
    count once; videos the reward model does not know go last, in beam order. Returns per user
    up to k video ids, best P-Score first (ties keep beam order).
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    if len(candidate_items) != contexts.short.shape[0]:
        raise ValueError(f"{len(candidate_items)} candidate lists for "
                         f"{contexts.short.shape[0]} contexts")
    index = {int(v): i + 1 for i, v in enumerate(reward_model.item_ids.tolist())}
    uniq = [list(dict.fromkeys(int(v) for v in row)) for row in candidate_items]
    width = max((len(r) for r in uniq), default=0)
    if width == 0:
        return [[] for _ in uniq]
    items = torch.zeros(len(uniq), width, dtype=torch.long)
    for r, row in enumerate(uniq):
        items[r, :len(row)] = torch.tensor([index.get(v, 0) for v in row], dtype=torch.long)
    scores = reward_model.pscore(contexts, items)
    out = []
    for r, row in enumerate(uniq):
        known = [(-float(scores[r, j]), j) for j in range(len(row)) if items[r, j] > 0]
        unknown = [j for j in range(len(row)) if items[r, j] == 0]
        order = [j for _, j in sorted(known)] + unknown
        out.append([row[j] for j in order[:k]])
    return out
