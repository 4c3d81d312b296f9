"""What catalogue coverage costs on a demo day: recall, NDCG and coverage@10 of every recommender.

    python -m bench.demo_frontier [--cycle runs/demo/pipeline/kfp/<first run>] [--sasrec-minutes 2]

Issue #13 asks the demo's candidate to beat popularity on the gate's held-out day *and* reach
coverage@10 >= 0.05. This scores, on the users and targets the gate measures (one demo cycle's
held-out day, `onerec.stages.evaluate`), every way we have of trading popularity for
personalisation, so the table says where that frontier lies on this data:

- popularity (the gate's floor) and the cycle's model in beam order (the gate's candidate);
- the same model at a wide beam (`--wide`), its beam re-ranked by lift, log p(item | user) -
  beta log p-bar(item), where p-bar is the model's own mean over the users (a scorer that
  re-orders the beam: no item from outside generation);
- our SASRec on click sequences (history and log before the window), `--sasrec-minutes`;
- item-kNN blended with recent popularity (`onerec.baselines.itemknn`) at several alphas.

It reads the held-out targets, so it reports, it does not choose: choices are made on the
04-26 validation day (docs/results.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.report import print_table
from bench.runtime import reexec_with_tuned_env

BETAS = (0.5, 0.75, 1.0)
ALPHAS = (0.0, 1.0, 2.0, 4.0)


def first_cycle(demo_out: Path) -> Path:
    """The oldest pipeline run folder of a `make demo` output (cycle 1)."""
    runs = sorted(p for p in (demo_out / "pipeline" / "kfp").glob("*") if p.is_dir())
    if not runs:
        raise SystemExit(f"no pipeline run under {demo_out}/pipeline/kfp: run `make demo` first")
    return runs[0]


def lift_rerank(items: Any, scores: Any, beta: float, k: int) -> list[list[int]]:
    """Re-order each row's beam (item indices, 0 = none; log-probabilities, -inf = dead) by
    log p - beta log p-bar, p-bar(item) = the mean over rows of p (0 where not generated)."""
    import numpy as np

    alive = np.isfinite(scores) & (items > 0)
    mass = np.zeros(int(items.max()) + 1)
    np.add.at(mass, items[alive], np.exp(scores[alive]))
    log_bar = np.log(mass / len(items) + 1e-12)
    lifted = np.where(alive, scores - beta * log_bar[items], -np.inf)
    order = np.argsort(-lifted, axis=1, kind="stable")[:, :k]
    ranked = np.take_along_axis(items, order, 1)
    ok = np.take_along_axis(alive, order, 1)
    return [[int(i) for i, good in zip(r, g, strict=True) if good] for r, g in zip(ranked, ok,
                                                                                  strict=True)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycle", default=None,
                    help="a demo pipeline run folder (default: the first under --demo-out)")
    ap.add_argument("--demo-out", default="runs/demo")
    ap.add_argument("--wide", type=int, default=512, help="beam width of the lift rows")
    ap.add_argument("--sasrec-minutes", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    reexec_with_tuned_env("bench.demo_frontier", argv)

    import numpy as np
    import pandas as pd
    import torch
    from rich.console import Console

    from onerec import stages
    from onerec.baselines import fit_itemknn, train_sasrec
    from onerec.baselines.sasrec import recommend as sasrec_recommend
    from onerec.checkpoint import load_model
    from onerec.data import kuairand
    from onerec.evaluate import coverage, rank_metrics_multi
    from onerec.generate import generate
    from onerec.recommend import _slice, recommend
    from onerec.trie import ItemTrie

    torch.set_num_threads(args.threads)
    cycle = Path(args.cycle) if args.cycle else first_cycle(Path(args.demo_out))
    snap_dir, cb_dir = cycle / "validate-data" / "snapshot", cycle / "refresh-codebook" / "codebook"
    ckpt = cycle / "align" / "model" / "checkpoint"
    snap = stages.Snapshot.load(snap_dir)
    space = stages.load_space(cb_dir)
    model, cfg, _ = load_model(ckpt, space.fingerprint)
    users, targets = stages.heldout_users(snap, None)
    target_sets = [targets[u] for u in users]
    ctx = stages.heldout_contexts(cfg, snap, space, users)
    events = snap.events()
    before = events[events["time_ms"] < snap.holdout_start_ms]
    history = kuairand.read_history(snap.data_dir)
    n_items = len(space)
    rows: list[tuple[str, dict[str, float]]] = []

    def add(name: str, recs: list[list[int]]) -> None:
        m = rank_metrics_multi(recs, target_sets, ks=(10,))
        rows.append((name, {**m, "coverage@10": coverage(recs, n_items, 10)}))

    pop = stages.evaluate_popularity(snap_dir)
    rows.append(("popularity (the gate's floor)", {**pop["metrics"],
                                                   "coverage@10": 10 / n_items}))
    add(f"OneRec, beam {cfg.serve.beam_width} order (the gate's candidate)",
        recommend(model, space, ctx, beam_width=cfg.serve.beam_width, top_n=10).items)
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    parts = [generate(model, _slice(ctx, s, min(len(users), s + 256)), beam_width=args.wide,
                      trie=trie, constrained=True) for s in range(0, len(users), 256)]
    items = torch.cat([g.items for g in parts]).cpu().numpy()
    scores = torch.cat([g.scores for g in parts]).cpu().numpy()
    alive = np.isfinite(scores) & (items > 0)
    wide_ids = [set(r) for r in space.to_ids([[int(i) for i in r[a]]
                                              for r, a in zip(items, alive, strict=True)])]
    in_beam = float(np.mean([any(t in ids for t in ts) for ids, ts in zip(wide_ids, target_sets,
                                                                          strict=True)]))
    distinct = len(set().union(*wide_ids))
    for beta in BETAS:
        add(f"OneRec, beam {args.wide} re-ranked by lift, beta {beta}",
            space.to_ids(lift_rerank(items, scores, beta, 10)))

    log = pd.concat([history, before], ignore_index=True) if history is not None else before
    log = log.sort_values("time_ms", kind="stable")
    clicks = log[log["is_click"] == 1]
    seqs = {int(u): [int(v) + 1 for v in g] for u, g in clicks.groupby("user_id")["video_id"]}
    sas = train_sasrec({u: s for u, s in seqs.items() if len(s) >= 2},
                       int(events["video_id"].max()) + 2, cfg.sasrec,
                       max_minutes=args.sasrec_minutes)
    add(f"SASRec (clicks, {args.sasrec_minutes:g} min)",
        [[i - 1 for i in r] for r in sasrec_recommend(sas, [seqs.get(u, []) for u in users], 10)])
    positive = log[(log["long_view"] == 1) | (log["is_like"] == 1)]
    recent = before[(before["long_view"] == 1) | (before["is_like"] == 1)]
    pos_hist = {int(u): g.tolist() for u, g in positive.groupby("user_id")["video_id"]}
    knn = fit_itemknn(pos_hist, recent["video_id"].tolist())
    for alpha in ALPHAS:
        add(f"item-kNN + recent popularity, alpha {alpha:g}",
            knn.recommend([pos_hist.get(u, []) for u in users], 10, alpha))

    floor = pop["metrics"]
    cols = ("recommender", "R@10", "N@10", "cov@10", "above popularity on both")
    table = []
    for name, m in rows:
        above = m["recall@10"] > floor["recall@10"] and m["ndcg@10"] > floor["ndcg@10"]
        table.append((name, f"{m['recall@10']:.4f}", f"{m['ndcg@10']:.4f}",
                      f"{m['coverage@10']:.4f}",
                      "-" if name.startswith("popularity") else ("yes" if above else "no")))
    load = tuple(round(x, 2) for x in os.getloadavg())
    print_table(Console(width=160), f"{cycle.name}: held-out {len(users):,} users, "
                f"{n_items:,} items; load average {load}", cols, table, left=("recommender",))
    print(f"beam {args.wide}: holds a target for {in_beam:.1%} of users; {distinct:,} distinct "
          f"videos over all users' beams (coverage at most {distinct / n_items:.4f})")
    return {"rows": dict(rows), "in_beam": in_beam, "distinct_in_beam": distinct,
            "n_users": len(users), "n_items": n_items}


if __name__ == "__main__":
    main()
