"""Where OneRec loses to SASRec on Beauty: probes of one trained model, split by transitions.

    python -m bench.heldout_shift --run runs/q30/beauty [--users 3000] [--sasrec-minutes 4]

OneRec's validation numbers beat our SASRec's while its test numbers do not (docs/results.md).
This loads the checkpoint and codebook that a `bench.quality --dataset beauty` run left in
`--run`, trains our SASRec in the same process, and scores both on the same seeded users
under four (history -> target) probes of the TIGER split:

- valid:   seq[:-2] -> seq[-2]      - test:    seq[:-1] -> seq[-1]
- skip:    seq[:-2] -> seq[-1]      - shorter: seq[:-3] -> seq[-2]

Each probe is split by whether the pair (last history item -> target) occurs in the training
sequences (`onerec.baselines.transitions`), with the item-transitions baseline beside the two
models, and OneRec's beam recall@50 (is the target generated at all?). It is a diagnosis of
a reported row, so it reads the test target; model choices are made on the validation split
(`bench.ablation`), never with this.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.quality import SHARED
from bench.report import print_table
from bench.runtime import reexec_with_tuned_env


def probes(seqs: dict[int, list[int]], users: list[int], max_history: int
           ) -> dict[str, list[tuple[int, list[int], int]]]:
    """(user, history, target) rows of each probe, histories capped at `max_history`."""
    def rows(cut: int, target: int) -> list[tuple[int, list[int], int]]:
        return [(u, seqs[u][:cut][-max_history:], seqs[u][target]) for u in users
                if len(seqs[u][:cut]) > 0]
    return {"valid": rows(-2, -2), "test": rows(-1, -1), "skip": rows(-2, -1),
            "shorter": rows(-3, -2)}


def _mean(x: Any) -> float:
    """Mean of a boolean array; NaN for an empty group (printed as '-')."""
    return float(x.mean()) if len(x) else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the beauty/ folder of a bench.quality run")
    ap.add_argument("--data-dir", default=None, help="amazon-beauty-format folder")
    ap.add_argument("--users", type=int, default=3000, help="seeded users scored per probe")
    ap.add_argument("--sasrec-minutes", type=float, default=4.0)
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    reexec_with_tuned_env("bench.heldout_shift", argv)

    import numpy as np
    import torch
    from rich.console import Console

    from onerec.baselines import fit_transitions, split_by_transition, train_sasrec
    from onerec.baselines.sasrec import recommend as sasrec_recommend
    from onerec.checkpoint import load_model
    from onerec.data.sequences import load_beauty
    from onerec.evaluate import rank_metrics
    from onerec.recommend import recommend
    from onerec.stages import load_space
    from onerec.stream import contexts_from_histories

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    space = load_space(run / "codebook")
    model, cfg, _ = load_model(run / "train" / "checkpoint", space.fingerprint)
    data = load_beauty(args.data_dir or SHARED / "amazon-beauty")
    split = data.split(max_history=cfg.data.max_seq_len)
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(sorted(data.sequences), min(args.users, len(data.sequences)),
                              replace=False).tolist())
    rows_of = probes(data.sequences, users, cfg.data.max_seq_len)
    trans = fit_transitions(split.train)
    sas = train_sasrec(split.train, data.n_items, cfg.sasrec, valid=split.valid,
                       max_minutes=args.sasrec_minutes)
    index = space.index
    cols = ("seen share", "OneRec all", "SASRec all", "OneRec seen", "SASRec seen",
            "transitions seen", "OneRec unseen", "SASRec unseen", "OneRec in beam@50 seen")
    out: dict[str, dict[str, float]] = {}
    for name, rows in rows_of.items():
        targets = [t for *_, t in rows]
        seen = np.asarray(split_by_transition(trans, rows))
        ctx = contexts_from_histories([[index[i] for i in h if i in index] for _, h, _ in rows],
                                      cfg.data)
        ours = recommend(model, space, ctx, beam_width=args.beam, top_n=args.beam).items
        recs = {"OneRec": [r[:10] for r in ours],
                "SASRec": sasrec_recommend(sas, [h for _, h, _ in rows], 10),
                "transitions": trans.recommend([h for _, h, _ in rows], 10)}
        hit = {k: np.asarray([t in r for t, r in zip(targets, v, strict=True)])
               for k, v in recs.items()}
        in_beam = np.asarray([t in r for t, r in zip(targets, ours, strict=True)])
        m = {"seen share": _mean(seen),
             **{f"{k} all": rank_metrics(v, targets, ks=(10,))["recall@10"]
                for k, v in recs.items()},
             **{f"{k} seen": _mean(hit[k][seen]) for k in hit},
             **{f"{k} unseen": _mean(hit[k][~seen]) for k in hit},
             "OneRec in beam@50 seen": _mean(in_beam[seen])}
        out[name] = {k: float(v) for k, v in m.items()}
    load = tuple(round(x, 2) for x in os.getloadavg())
    print_table(Console(width=200), f"Recall@10 by probe, {len(users)} seeded Beauty users "
                f"(seen: last item -> target occurs in training); load average {load}",
                ("probe", *cols),
                [(name, *("-" if m[c] != m[c] else f"{m[c]:.4f}" for c in cols))
                 for name, m in out.items()], left=("probe",))
    return out


if __name__ == "__main__":
    main()
