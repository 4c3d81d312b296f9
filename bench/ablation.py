"""Beauty ablations on the validation split at a fixed step count (not a time budget).

    python -m bench.ablation --steps 1500 --threads 1 [--set model.item_loss_weight=1.0 ...]

Every change to the model is chosen here, on the validation target of 2,000 seeded users
(the TIGER protocol's second-to-last item), never on the test target: `bench.quality` touches
the test split once per reported row. A fixed step count makes rows comparable on a shared
machine (a wall-clock budget would give a busy run fewer steps). The codebook is cached per
tokenizer settings under `--cache`, so rows that change only the model share their semantic
IDs. With an item head (`model.item_loss_weight` > 0), the same trained model is also ranked
in beam order (`model.item_score_weight` = 0) and re-ranked at several weights, so the head's
re-ranking share of the gain is shown apart from its training effect, and a table of each
weight's validation numbers says which weight to choose. Each row is also split by whether
the validation pair (last history item -> target) occurs in training: the users item-to-item
memory can answer, where OneRec trails SASRec most (docs/results.md).

`--shifted` trains on each user's items but the last three instead of two. The TIGER validation
history (all items but the last two) is then no longer a sequence the model trained on: it
ends with an item new to the user, as the test history does. Without it, validation rewards a
model that memorises its training contexts (`bench.heldout_shift` shows OneRec even with
SASRec on the validation target and 13% behind it on the test target).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.quality import BEAUTY_DEFAULTS, SHARED, by_transition
from bench.report import csv_of
from bench.runtime import reexec_with_tuned_env

if TYPE_CHECKING:
    from onerec.data.sequences import LeaveOneOut, SequenceData

SCORE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def selection_split(data: SequenceData, *, shifted: bool) -> LeaveOneOut:
    """The TIGER split to choose on; `shifted` drops each user's last training item, so the
    validation history ends with an item the model never saw in that user's sequence."""
    split = data.split(max_history=20)
    if shifted:
        split = dataclasses.replace(split, train={u: s[:-1] for u, s in split.train.items()})
    return split


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps (fixed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam", type=int, default=None,
                    help="beam width (default: the Beauty defaults' serve.beam_width)")
    ap.add_argument("--more-beams", type=csv_of(int), default=[],
                    help="comma-separated wider beams to score the same model at")
    ap.add_argument("--more-weights", type=csv_of(float), default=[],
                    help="re-rank weights for --more-beams (default: model.item_score_weight)")
    ap.add_argument("--more-priors", type=csv_of(float), default=[],
                    help="transition priors for --more-beams (default: model.transition_prior)")
    ap.add_argument("--n-valid", type=int, default=2000, help="validation users (seeded)")
    ap.add_argument("--data-dir", default=None, help="amazon-beauty-format folder")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--shifted", action="store_true",
                    help="train on each user's items but the last three, so the validation "
                         "history ends with an item new to the user, as the test history does")
    ap.add_argument("--sasrec", action="store_true",
                    help="also train our SASRec on the same split and score it on the same "
                         "validation users (the reference row)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--cache", default="runs/ablation/codebooks")
    args = ap.parse_args(argv)
    reexec_with_tuned_env("bench.ablation", argv)

    import numpy as np
    import torch

    from onerec.baselines import fit_transitions, split_by_transition
    from onerec.config import Config
    from onerec.data.sequences import load_beauty
    from onerec.items import ItemSpace
    from onerec.pretrain import build_codebook, evaluate_sequences, scorers_set
    from onerec.stream import requests_from_sequences
    from onerec.tokenizer import Codebook
    from onerec.tokenizer.embeddings import catalogue_from_sequences
    from onerec.train import train

    torch.set_num_threads(args.threads)
    cfg = Config.from_preset(args.preset, [*BEAUTY_DEFAULTS, f"train.max_steps={args.steps}",
                                       "train.checkpoint_every=100000", *args.overrides])
    args.beam = args.beam or cfg.serve.beam_width
    data = load_beauty(args.data_dir or SHARED / "amazon-beauty")
    split = selection_split(data, shifted=args.shifted)
    key = json.dumps(dataclasses.asdict(cfg.tokenizer), sort_keys=True) + (
        "shifted" if args.shifted else "")
    cb_dir = Path(args.cache) / hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:10]
    if cb_dir.exists():
        cb = Codebook.load(cb_dir)
    else:
        cat = catalogue_from_sequences(data)
        cat = dataclasses.replace(cat, sequences=[np.asarray(s, dtype=np.int64)
                                                  for _, s in sorted(split.train.items())])
        cb = build_codebook(cfg, cat, cb_dir)
    space = ItemSpace.from_codebook(cb)
    index = space.index
    reqs = requests_from_sequences({u: [index[i] for i in s] for u, s in split.train.items()},
                                   cfg.data, causal=cfg.model.causal_encoder)
    rng = np.random.default_rng(0)
    valid = [split.valid[i] for i in rng.choice(len(split.valid), min(args.n_valid,
                                                                    len(split.valid)),
                                                replace=False)]
    name = hashlib.sha1(json.dumps(args.overrides).encode(), usedforsecurity=False).hexdigest()[:8]
    t0 = time.perf_counter()

    def log(rec: dict) -> None:
        keep = ("step", "loss", "item_loss", "samples_per_s", "mfu", "lr")
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in rec.items() if k in keep}), flush=True)

    model, res = train(cfg, reqs, space.codes, space.vocab_sizes, Path(args.out) / name,
                       codebook_fingerprint=cb.fingerprint, resume=False, log=log,
                       shuffle_window=len(reqs))
    train_s = time.perf_counter() - t0
    weights = SCORE_WEIGHTS if model.item_query is not None else (model.cfg.item_score_weight,)
    chosen = model.cfg.item_score_weight
    rows = {}
    seen = split_by_transition(fit_transitions(split.train), valid)
    for w in weights:
        model.cfg.item_score_weight = w
        m, recs = evaluate_sequences(model, space, cfg, valid, beam_width=args.beam)
        rows[w] = {k: round(float(v), 4) for k, v in m.items()}
        (_, split_m), = by_transition({"OneRec": recs}, [t for *_, t in valid], seen)
        rows[w].update({k: round(v, 4) for k, v in split_m.items()})
        print(f"valid, item_score_weight={w}: {json.dumps(rows[w])}", flush=True)
    # beam -> "w<re-rank weight>" or "w<weight> prior<transition prior>" -> row
    by_beam: dict[int, dict[str, dict]] = {}
    more_w = args.more_weights or [chosen]
    prior0 = model.cfg.transition_prior
    more_g = args.more_priors or [prior0]
    if model.next_items is None:
        more_g = [prior0]
    for beam in args.more_beams:
        for w in more_w if model.item_query is not None else [chosen]:
            for g in more_g:
                with scorers_set(model, item_score_weight=w, transition_prior=g):
                    m, recs = evaluate_sequences(model, space, cfg, valid, beam_width=beam)
                row = {k: round(float(v), 4) for k, v in m.items()}
                (_, split_m), = by_transition({"OneRec": recs}, [t for *_, t in valid], seen)
                row.update({k: round(v, 4) for k, v in split_m.items()})
                key = f"w{w:g}" + (f" prior{g:g}" if model.next_items is not None else "")
                by_beam.setdefault(beam, {})[key] = row
                print(f"valid, beam {beam}, {key}: {json.dumps(row)}", flush=True)
    sasrec = _sasrec_row(split, data.n_items, cfg, valid, seen) if args.sasrec else None
    result = {"overrides": args.overrides, "sasrec": sasrec, "steps": res.steps,
              "train_s": round(train_s, 1), "n_valid": len(valid), "beam": args.beam, "by_item_score_weight": rows,
              "by_beam": by_beam, "shifted": args.shifted,
              "transition_seen_share": round(sum(seen) / len(seen), 4),
              "load_avg": os.getloadavg(), "codebook": cb.metrics.get("collision_rate")}
    print("RESULT", json.dumps(result), flush=True)
    return result


def _sasrec_row(split: LeaveOneOut, n_items: int, cfg, valid: list, seen: list[bool]
                ) -> dict[str, float]:
    """Our SASRec on the ablation's split and validation users, with the same columns."""
    from onerec.baselines import train_sasrec
    from onerec.baselines.sasrec import recommend
    from onerec.evaluate import coverage, rank_metrics

    t0 = time.perf_counter()
    model = train_sasrec(split.train, n_items, cfg.sasrec, valid=valid)
    recs = recommend(model, [h for _, h, _ in valid], 10)
    targets = [t for *_, t in valid]
    row = {**rank_metrics(recs, targets, ks=(5, 10)), "coverage@10": coverage(recs, n_items, 10)}
    (_, split_m), = by_transition({"SASRec": recs}, targets, seen)
    row = {k: round(float(v), 4) for k, v in {**row, **split_m}.items()}
    row["train_s"] = round(time.perf_counter() - t0, 1)
    print(f"valid, SASRec (ours): {json.dumps(row)}", flush=True)
    return row


if __name__ == "__main__":
    main()
