"""Training samples from the event stream, in time order, with a resumable position.

A *request* is what the serving system answered at once: a user's impressions within
`data.request_gap_ms` of the first one. Its context is the user's behaviour strictly before
the request (so nothing leaks from the future), and its targets are the request's positive
events (long view or like: OneRec's "videos the user engaged with"). One encoder pass serves
every target of a request (OneRec's compute compression): `collate` emits `target_req`.

Context pathways (OneRec's multi-scale user modelling):
- short: the last `max_seq_len` videos the user clicked;
- pos: the last `max_pos_seq_len` long-viewed or liked videos;
- long: the last `max_long_seq_len` videos shown.
All three are seeded with KuaiRand's pre-log history when given (shown videos for short and
long, long views and likes for pos).

`RequestStream` walks the request table in time order; its `state_dict` (position, epoch,
watermark) goes into checkpoints so a resumed run continues with exactly the next batch, and
the next continuous-training cycle starts after the watermark.

Sequence datasets (Amazon Beauty) map to the same table: every prefix of a user's training
sequence is a request whose one target is the next item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from onerec.config import DataConfig
from onerec.features.sequences import UserSequences
from onerec.model import Batch


@dataclass
class Requests:
    """Flat arrays of requests, their contexts and their targets (item indices, 0 = padding)."""

    user: np.ndarray  # (R,) user bucket
    time_ms: np.ndarray  # (R,) request time (sorted)
    short: np.ndarray  # (R, S)
    pos: np.ndarray  # (R, P)
    long: np.ndarray  # (R, G)
    target_offsets: np.ndarray  # (R + 1,) targets of request r: targets[off[r]:off[r+1]]
    targets: np.ndarray  # (T,) item index of each target
    target_len: np.ndarray | None = None  # (T,) causal encoder: short items the target sees
    target_rows: np.ndarray | None = None  # (T,) event-log row of each target (its feedback)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def select(self, idx: np.ndarray) -> Requests:
        off = self.target_offsets
        counts = off[idx + 1] - off[idx]
        pick = (np.concatenate([np.arange(off[i], off[i + 1]) for i in idx]) if len(idx)
                else np.zeros(0, dtype=np.int64))
        return Requests(self.user[idx], self.time_ms[idx], self.short[idx], self.pos[idx],
                        self.long[idx], np.concatenate([[0], np.cumsum(counts)]),
                        self.targets[pick],
                        None if self.target_len is None else self.target_len[pick],
                        None if self.target_rows is None else self.target_rows[pick])


def _known(videos: Any, item_index: dict[int, int]) -> list[int]:
    """A window of raw video ids -> the item indices of those the catalogue knows, in order."""
    return [item_index[v] for v in videos if v in item_index]


def _left_pad(seq: Any, width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.int64)
    tail = list(seq)[-width:]
    if tail:
        out[width - len(tail):] = tail
    return out


def requests_from_events(events: pd.DataFrame, item_index: dict[int, int], cfg: DataConfig, *,
                         history: pd.DataFrame | None = None, n_user_buckets: int = 1,
                         positive_only: bool = True,
                         final_state: dict[int, tuple[list[int], list[int], list[int]]] | None = None,
                         ) -> Requests:
    """Build requests from a time-ordered impression log (the event schema).

    item_index maps video id -> item index (1-based); unknown videos are skipped as targets. In
    contexts they keep their place in the bounded windows (the last `max_seq_len` clicks, ...,
    of raw video ids) and are dropped when the window is read, as serving reads the same windows
    from the online store (`onerec.features.sequences`): a user's context is the same, id for id,
    in training and online (tests/features/test_store.py). `history` (KuaiRand user_history: user_id, watch_seq, long_watch_seq, like_seq)
    seeds the lifelong and positive sequences. If `final_state` is a dict, it receives each
    user's (short, pos, long) context after the last event: the context of a request made
    right after the log ends (evaluation on a later test period, serving).
    """
    s_len, p_len, g_len = cfg.max_seq_len, cfg.max_pos_seq_len, cfg.max_long_seq_len
    seqs: dict[int, UserSequences] = {}

    def user(u: int) -> UserSequences:
        s = seqs.get(u)
        if s is None:
            s = seqs[u] = UserSequences.empty(cfg)
        return s

    if history is not None:
        for row in history.itertuples(index=False):
            user(int(row.user_id)).seed([int(v) for v in row.watch_seq],
                                        [int(v) for v in (*row.long_watch_seq, *row.like_seq)],
                                        int(getattr(row, "last_time_ms", -1)))
    # Python lists: the loop below reads one element at a time
    users = events["user_id"].to_numpy(np.int64).tolist()
    videos = events["video_id"].to_numpy(np.int64).tolist()
    times = events["time_ms"].to_numpy(np.int64).tolist()
    click = events["is_click"].to_numpy().astype(bool).tolist()
    positive = (events["long_view"].to_numpy() | events["is_like"].to_numpy()).astype(bool).tolist()
    ratio = (events["watch_ratio"].to_numpy(np.float32).tolist() if "watch_ratio" in events
             else [math.nan] * len(events))
    out_user, out_time, out_s, out_p, out_g, offsets, targets = [], [], [], [], [], [0], []
    rows: list[int] = []  # event-log row of each target, so callers can read its feedback
    open_req: dict[int, tuple[int, list[int]]] = {}  # user -> (start time, pending events)

    def close(u: int) -> None:
        start, idxs = open_req.pop(u)
        kept = [i for i in idxs if (positive[i] or not positive_only) and videos[i] in item_index]
        tgts = [item_index[videos[i]] for i in kept]
        s = user(u)
        if tgts:
            short, pos, long = s.video_ids()
            rows.extend(kept)
            out_user.append(u % n_user_buckets)
            out_time.append(start)
            out_s.append(_left_pad(_known(short, item_index), s_len))
            out_p.append(_left_pad(_known(pos, item_index), p_len))
            out_g.append(_left_pad(_known(long, item_index), g_len))
            targets.extend(tgts)
            offsets.append(len(targets))
        for i in idxs:  # the request's feedback joins the history only after the request
            v, t = videos[i], times[i]
            if s.accepts(v, t):  # serving's idempotence rule: a replayed event counts once
                s.observe(v, t, click=click[i], positive=positive[i], watch_ratio=ratio[i])

    for i in range(len(events)):
        u = users[i]
        req = open_req.get(u)
        if req is not None and times[i] - req[0] > cfg.request_gap_ms:
            close(u)
            req = None
        if req is None:
            open_req[u] = (int(times[i]), [i])
        else:
            req[1].append(i)
    for u in sorted(open_req, key=lambda u: open_req[u][0]):
        close(u)
    if final_state is not None:
        for u, s in seqs.items():
            short, pos, long = s.video_ids()
            final_state[u] = (_known(short, item_index), _known(pos, item_index),
                              _known(long, item_index))
    order = np.argsort(np.asarray(out_time, dtype=np.int64), kind="stable")
    reqs = Requests(
        user=np.asarray(out_user, dtype=np.int64), time_ms=np.asarray(out_time, dtype=np.int64),
        short=np.asarray(out_s, dtype=np.int64).reshape(-1, s_len),
        pos=np.asarray(out_p, dtype=np.int64).reshape(-1, p_len),
        long=np.asarray(out_g, dtype=np.int64).reshape(-1, g_len),
        target_offsets=np.asarray(offsets, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.int64), target_rows=np.asarray(rows, dtype=np.int64))
    return reqs.select(order)


def requests_from_sequences(sequences: dict[int, list[int]], cfg: DataConfig, *,
                            n_user_buckets: int = 1, min_history: int = 1,
                            causal: bool = False) -> Requests:
    """Every prefix of each (training) sequence predicts its next item; no time, no feedback.

    With `causal` (a model with `causal_encoder`), one request per window of a user's sequence
    carries all its next-item targets, each with the number of items it may see (`target_len`);
    sequences longer than `max_seq_len` + 1 are covered by windows advancing by half a window,
    so every target still sees at least half a window of history.
    """
    if causal:
        return _causal_requests(sequences, cfg.max_seq_len, n_user_buckets, min_history)
    s_len = cfg.max_seq_len
    users, shorts, targets = [], [], []
    for u, seq in sequences.items():
        for t in range(min_history, len(seq)):
            users.append(u % n_user_buckets)
            shorts.append(_left_pad(seq[:t], s_len))
            targets.append(seq[t])
    r = len(users)
    return Requests(
        user=np.asarray(users, dtype=np.int64), time_ms=np.arange(r, dtype=np.int64),
        short=np.asarray(shorts, dtype=np.int64).reshape(r, s_len),
        pos=np.zeros((r, 1), dtype=np.int64), long=np.zeros((r, 1), dtype=np.int64),
        target_offsets=np.arange(r + 1, dtype=np.int64), targets=np.asarray(targets, np.int64))


def _causal_requests(sequences: dict[int, list[int]], s_len: int, n_user_buckets: int,
                     min_history: int) -> Requests:
    users, shorts, targets, lens, offsets = [], [], [], [], [0]
    stride = max(1, s_len // 2)
    for u, seq in sequences.items():
        n = len(seq)
        done = min_history - 1  # targets seq[j] for j <= done are covered
        end = min(n - 1, s_len)  # the window's history is seq[end - s_len: end]
        while done < n - 1:
            start = max(0, end - s_len)
            js = [j for j in range(max(done + 1, start + min_history), end + 1)]
            if js:
                users.append(u % n_user_buckets)
                shorts.append(_left_pad(seq[start:end], s_len))
                targets.extend(seq[j] for j in js)
                lens.extend(j - start for j in js)
                offsets.append(len(targets))
            done = end
            end = min(n - 1, end + stride)
    r = len(users)
    return Requests(
        user=np.asarray(users, dtype=np.int64), time_ms=np.arange(r, dtype=np.int64),
        short=np.asarray(shorts, dtype=np.int64).reshape(r, s_len),
        pos=np.zeros((r, 1), dtype=np.int64), long=np.zeros((r, 1), dtype=np.int64),
        target_offsets=np.asarray(offsets, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.int64), target_len=np.asarray(lens, np.int64))


def contexts_from_histories(histories: list[list[int]], cfg: DataConfig,
                            users: list[int] | None = None, n_user_buckets: int = 1,
                            pos: list[list[int]] | None = None,
                            long: list[list[int]] | None = None) -> Batch:
    """An inference batch from plain item histories (most recent last).

    Without `pos` / `long` the batch has one padding column for each (sequence datasets).
    """
    b = len(histories)

    def stack(seqs: list[list[int]] | None, width: int) -> torch.Tensor:
        if seqs is None:
            return torch.zeros(b, 1, dtype=torch.long)
        arr = np.stack([_left_pad(h, width) for h in seqs]) if b else np.zeros((0, width), np.int64)
        return torch.from_numpy(arr)

    u = np.asarray([x % n_user_buckets for x in users] if users else [0] * b, dtype=np.int64)
    return Batch(user=torch.from_numpy(u), short=stack(histories, cfg.max_seq_len),
                 pos=stack(pos, cfg.max_pos_seq_len), long=stack(long, cfg.max_long_seq_len))


def collate(reqs: Requests, idx: np.ndarray, item_codes: torch.Tensor) -> Batch:
    """Requests `idx` -> a Batch whose targets point back at their request (target_req)."""
    sub = reqs.select(np.asarray(idx))
    counts = np.diff(sub.target_offsets)
    return Batch(
        user=torch.from_numpy(sub.user), short=torch.from_numpy(sub.short),
        pos=torch.from_numpy(sub.pos), long=torch.from_numpy(sub.long),
        target_codes=item_codes[torch.from_numpy(sub.targets)],
        target_req=torch.from_numpy(np.repeat(np.arange(len(sub)), counts)),
        target_len=None if sub.target_len is None else torch.from_numpy(sub.target_len),
        target_items=torch.from_numpy(sub.targets))


class RequestStream:
    """Batches of requests in time order (or a seeded shuffle per epoch), resumable exactly.

    `shuffle_window` > 0 shuffles within consecutive windows of that many requests, which keeps
    the stream close to time order (streaming training) while decorrelating a batch; 0 keeps
    strict time order.
    """

    def __init__(self, reqs: Requests, batch_size: int, *, seed: int = 0,
                 shuffle_window: int = 0) -> None:
        if len(reqs) == 0:
            raise ValueError("the request stream is empty: no positive events to train on")
        self.reqs = reqs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_window = shuffle_window
        self.epoch = 0
        self.position = 0  # next request (in this epoch's order)
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        n = len(self.reqs)
        order = np.arange(n)
        if self.shuffle_window > 0:
            rng = np.random.default_rng([self.seed, self.epoch])
            for start in range(0, n, self.shuffle_window):
                chunk = order[start:start + self.shuffle_window]
                order[start:start + self.shuffle_window] = rng.permutation(chunk)
        return order

    def next_indices(self) -> np.ndarray:
        if self.position >= len(self.reqs):
            self.epoch += 1
            self.position = 0
            self._order = self._make_order()
        idx = self._order[self.position:self.position + self.batch_size]
        self.position += len(idx)
        return idx

    @property
    def watermark_ms(self) -> int:
        """Time of the newest request consumed so far (continuous training resumes after it)."""
        if self.epoch > 0:
            return int(self.reqs.time_ms.max())
        if self.position == 0:
            return 0
        return int(self.reqs.time_ms[self._order[: self.position]].max())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "shuffle_window": self.shuffle_window, "n_requests": len(self.reqs),
                "watermark_ms": self.watermark_ms}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n_requests"] != len(self.reqs):
            raise ValueError(f"stream state is for {state['n_requests']} requests, "
                             f"this stream has {len(self.reqs)}: different data")
        self.seed, self.shuffle_window = state["seed"], state["shuffle_window"]
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._make_order()
