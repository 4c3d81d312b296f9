"""Pretraining recipes: dataset -> codebook -> requests -> training -> offline evaluation.

Two protocols, both full ranking over the whole catalogue:
- sequences (Amazon Beauty, TIGER leave-one-out): the codebook's collaborative part and the
  model see only the training part of each sequence (no test item leaks through co-occurrence);
  the validation target picks the best checkpoint; the test target is reported.
- events (KuaiRand-Pure, temporal split): train on events before the cut (the start of the
  day `data.test_days` days before the last one), test on each user's later positive events
  (long view or like), with the user's context as it was at the cut.

Each recipe returns a plain dict (metrics, wall times, sizes) that benchmarks print and the
pipeline's evaluation gate compares.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from onerec.config import Config
from onerec.data import kuairand
from onerec.data.sequences import SequenceData
from onerec.evaluate import coverage, rank_metrics, rank_metrics_multi, temporal_split, test_targets
from onerec.items import ItemSpace
from onerec.model import OneRec
from onerec.recommend import recommend
from onerec.stream import contexts_from_histories, requests_from_events, requests_from_sequences
from onerec.tokenizer import Codebook, ItemEmbedder, fit_codebook
from onerec.tokenizer.embeddings import Catalogue, catalogue_from_kuairand, catalogue_from_sequences
from onerec.train import train

Log = Callable[[dict[str, Any]], None]


def build_codebook(cfg: Config, cat: Catalogue, out: Path | None = None,
                   progress: bool = False) -> Codebook:
    emb = ItemEmbedder(cfg.tokenizer).fit_transform(cat, progress=progress)
    cb = fit_codebook(emb.vectors(), emb.item_ids, cfg.tokenizer,
                      config_fingerprint=cfg.fingerprint())
    if out is not None:
        cb.save(out)
    return cb


@contextmanager
def scorers_set(model: OneRec, **weights: float) -> Iterator[None]:
    """Set ranking weights of `model.cfg` (item_score_weight, transition_prior) for a block."""
    before = {k: getattr(model.cfg, k) for k in weights}
    for k, v in weights.items():
        setattr(model.cfg, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(model.cfg, k, v)


def evaluate_sequences(model: OneRec, space: ItemSpace, cfg: Config,
                       rows: list[tuple[int, list[int], int]], *, beam_width: int, top_n: int = 10,
                       constrained: bool = True) -> tuple[dict[str, float], list[list[int]]]:
    index = space.index
    hist = [[index[i] for i in h if i in index] for _, h, _ in rows]
    ctx = contexts_from_histories(hist, cfg.data)
    recs = recommend(model, space, ctx, beam_width=beam_width, top_n=top_n,
                     constrained=constrained)
    metrics = rank_metrics(recs.items, [t for *_, t in rows], ks=(5, 10))
    metrics["legality"] = recs.legality
    metrics["coverage@10"] = coverage(recs.items, len(space), 10)
    return metrics, recs.items


def run_sequences(cfg: Config, data: SequenceData, out_dir: str | Path, *,
                  time_budget_s: float | None = None, beam_width: int | None = None,
                  eval_every: int = 0, n_valid: int = 2000, log: Log | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """TIGER leave-one-out on a sequence dataset. Returns metrics and the test recommendations."""
    out_dir = Path(out_dir)
    beam = beam_width or cfg.serve.beam_width
    split = data.split(max_history=cfg.data.max_seq_len)
    t0 = time.perf_counter()
    cat = catalogue_from_sequences(data)
    cat = dataclasses.replace(cat, sequences=[np.asarray(s, dtype=np.int64)
                                              for _, s in sorted(split.train.items())])
    cb = build_codebook(cfg, cat, out_dir / "codebook")
    codebook_s = time.perf_counter() - t0
    space = ItemSpace.from_codebook(cb)
    index = space.index
    train_seqs = {u: [index[i] for i in s] for u, s in split.train.items()}
    reqs = requests_from_sequences(train_seqs, cfg.data, causal=cfg.model.causal_encoder)
    rng = np.random.default_rng(seed)
    valid = [split.valid[i] for i in rng.choice(len(split.valid), min(n_valid, len(split.valid)),
                                                replace=False)]
    best: dict[str, Any] = {"ndcg@10": -1.0, "state": None, "step": 0}

    def eval_fn(model: OneRec, step: int) -> dict[str, float]:
        m, _ = evaluate_sequences(model, space, cfg, valid, beam_width=min(beam, 20))
        if m["ndcg@10"] > best["ndcg@10"]:
            best.update({"ndcg@10": m["ndcg@10"], "state": copy.deepcopy(model.state_dict()),
                         "step": step})
        return {f"valid_{k}": v for k, v in m.items()}

    t1 = time.perf_counter()
    model, res = train(cfg, reqs, space.codes, space.vocab_sizes, out_dir / "train",
                       codebook_fingerprint=cb.fingerprint, resume=False,
                       time_budget_s=time_budget_s, eval_fn=eval_fn if eval_every else None,
                       eval_every=eval_every, log=log,
                       shuffle_window=len(reqs))  # no time order in sequence data: full shuffle
    train_s = time.perf_counter() - t1
    if eval_every:
        eval_fn(model, res.steps)
        model.load_state_dict(best["state"])
    t2 = time.perf_counter()
    metrics, recs = evaluate_sequences(model, space, cfg, split.test, beam_width=beam)
    free, _ = evaluate_sequences(model, space, cfg, split.test[:2000], beam_width=beam,
                                 constrained=False)
    metrics["legality_unconstrained"] = free["legality"]
    # the same model with its scorers off, so each one's share of the gain is shown apart:
    # without the transition memory (the item head alone re-ranks), and in beam order
    head = model.item_query is not None and model.cfg.item_score_weight > 0
    chain = model.next_items is not None and model.cfg.transition_prior > 0
    no_chain = beam_order = None
    if chain:
        with scorers_set(model, transition_prior=0.0):
            no_chain, _ = evaluate_sequences(model, space, cfg, split.test, beam_width=beam)
    if head or chain:
        with scorers_set(model, transition_prior=0.0, item_score_weight=0.0):
            beam_order, _ = evaluate_sequences(model, space, cfg, split.test, beam_width=beam)
    return {
        "metrics_beam_order": beam_order, "metrics_no_transitions": no_chain,
        "metrics": metrics, "steps": res.steps, "best_step": best["step"] or res.steps,
        "train_s": train_s, "codebook_s": codebook_s, "eval_s": time.perf_counter() - t2,
        "params": model.num_params(), "active_params": model.num_params(active=True),
        "final_loss": res.final_loss, "history": res.history,
        "codebook": {k: cb.metrics[k] for k in ("collision_rate", "items_per_id_max")},
        "recs": [{"user": u, "target": t, "recs": r}
                 for (u, _, t), r in zip(split.test, recs, strict=True)],
    }


def run_kuairand(cfg: Config, data_dir: str | Path, out_dir: str | Path, *,
                 time_budget_s: float | None = None, beam_width: int | None = None,
                 log: Log | None = None, max_test_users: int | None = None) -> dict[str, Any]:
    """Temporal split on KuaiRand: train before the cut, test on later positive events."""
    out_dir = Path(out_dir)
    beam = beam_width or cfg.serve.beam_width
    ds = kuairand.load(data_dir)
    history = kuairand.read_history(data_dir)
    train_ev, test_ev = temporal_split(ds.events, cfg.data.test_days)
    t0 = time.perf_counter()
    train_ds = dataclasses.replace(ds, events=train_ev)
    cb = build_codebook(cfg, catalogue_from_kuairand(train_ds), out_dir / "codebook")
    codebook_s = time.perf_counter() - t0
    space = ItemSpace.from_codebook(cb)
    index = space.index
    state: dict[int, tuple[list[int], list[int], list[int]]] = {}
    reqs = requests_from_events(train_ev, index, cfg.data, history=history, final_state=state)
    t1 = time.perf_counter()
    model, res = train(cfg, reqs, space.codes, space.vocab_sizes, out_dir / "train",
                       codebook_fingerprint=cb.fingerprint, resume=False,
                       time_budget_s=time_budget_s, log=log)
    train_s = time.perf_counter() - t1
    targets = test_targets(test_ev)
    users = sorted(u for u in targets if u in state)
    if max_test_users is not None:
        users = users[:max_test_users]
    ctx = contexts_from_histories([state[u][0] for u in users], cfg.data,
                                  pos=[state[u][1] for u in users],
                                  long=[state[u][2] for u in users])
    t2 = time.perf_counter()
    recs = recommend(model, space, ctx, beam_width=beam, top_n=10)
    metrics = rank_metrics_multi(recs.items, [targets[u] for u in users], ks=(5, 10))
    metrics["legality"] = recs.legality
    metrics["coverage@10"] = coverage(recs.items, len(space), 10)
    return {
        "metrics": metrics, "steps": res.steps, "train_s": train_s, "codebook_s": codebook_s,
        "eval_s": time.perf_counter() - t2, "params": model.num_params(),
        "n_train_requests": len(reqs), "n_test_users": len(users), "final_loss": res.final_loss,
        "n_items": len(space),
        "users": users, "targets": [targets[u] for u in users], "recs_items": recs.items,
        "train_events": train_ev, "test_events": test_ev, "history": res.history,
    }
