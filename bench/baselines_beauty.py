"""Baselines on Amazon Beauty, TIGER protocol: our SASRec and popularity vs the published SASRec.

Leave-one-out (last item test, second-to-last validation), histories capped at 20, full
ranking over all 12,101 items, Recall/NDCG@5/10 averaged over the 22,363 users. SASRec trains
on the training sequences with early stopping on validation NDCG@10 and a wall-clock budget.

    python -m bench.baselines_beauty [--minutes 10] [--set sasrec.dropout=0.5 ...]

Large per-step allocations (the full-softmax logits) spend much of their time in page faults
with glibc's default malloc thresholds; `--malloc-tuning` (on by default) re-executes the
process with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_ set, which glibc
only reads at start-up, and OMP_WAIT_POLICY=PASSIVE (read by OpenMP at start-up too). See
docs/baselines.md for the measured effect of both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.runtime import reexec_with_tuned_env

PUBLISHED = {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318}
DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "amazon-beauty"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DIR))
    ap.add_argument("--minutes", type=float, default=10.0, help="SASRec training budget")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. sasrec.dropout=0.5 (repeatable)")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's malloc and OpenMP's wait-policy defaults")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    if not args.no_malloc_tuning:
        reexec_with_tuned_env("bench.baselines_beauty", argv)

    import torch

    from onerec.baselines import fit_popularity, recommend, train_sasrec
    from onerec.config import Config
    from onerec.data.sequences import load_beauty
    from onerec.evaluate import coverage, rank_metrics

    torch.set_num_threads(args.threads)
    cfg = Config.from_preset("small", args.overrides)
    data = load_beauty(args.data_dir)
    split = data.split(max_history=20)
    targets = [t for _, _, t in split.test]
    histories = [h for _, h, _ in split.test]
    print(f"Amazon Beauty: {len(data.sequences):,} users, {data.n_items:,} items; "
          f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}; "
          f"{torch.get_num_threads()} threads")
    print(f"sasrec config: {json.dumps(cfg.sasrec.__dict__)}")

    rows = []
    t0 = time.perf_counter()
    pop = fit_popularity(split.train)
    pop_recs = pop.recommend(len(targets), 10)
    rows.append(("popularity (ours)", rank_metrics(pop_recs, targets),
                 time.perf_counter() - t0, coverage(pop_recs, data.n_items, 10), ""))

    def log(e: dict) -> None:
        v = f" valid N@10 {e['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in e else ""
        print(f"  epoch {e['epoch']:3d} loss {e['loss']:.4f}{v} ({e['seconds']:.0f}s)",
              flush=True)

    t0 = time.perf_counter()
    model = train_sasrec(split.train, data.n_items, cfg.sasrec, valid=split.valid, log=log,
                         max_minutes=args.minutes)
    train_s = time.perf_counter() - t0
    recs = recommend(model, histories, 10)
    epochs = len(model.history)
    secs = [b["seconds"] - a for a, b in zip([0.0] + [e["seconds"] for e in model.history],
                                             model.history, strict=False)]
    secs = sorted(secs)
    rows.append(("SASRec (ours, full softmax)", rank_metrics(recs, targets), train_s,
                 coverage(recs, data.n_items, 10),
                 f"{epochs} epochs, best {model.best_epoch}, "
                 f"epoch time median {secs[len(secs) // 2]:.1f}s, min {secs[0]:.1f}s"))
    rows.append(("SASRec (published, TIGER Tab. 1)", PUBLISHED, None, None, ""))

    keys = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    print()
    print("| model | R@5 | N@5 | R@10 | N@10 | cov@10 | train wall time | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m, secs, cov, note in rows:
        vals = " | ".join(f"{m[k]:.4f}" for k in keys)
        t = f"{secs:.0f} s" if secs is not None else "-"
        c = f"{cov:.3f}" if cov is not None else "-"
        print(f"| {name} | {vals} | {c} | {t} | {note} |")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m bench.baselines_beauty " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "sasrec_config": cfg.sasrec.__dict__,
              "rows": [{"model": n, "metrics": m, "train_s": s, "coverage@10": c, "notes": no}
                       for n, m, s, c, no in rows],
              "history": model.history}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
